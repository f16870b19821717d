"""The training-free landmark peer: a backend over the geometry channel, through the merger."""

from __future__ import annotations

import numpy as np
import pytest

from fesnet.model.data.landmarks import CORNER_L, CORNER_R
from fesnet.model.geometry import GEOMETRY_DIMS, Z_ALL, geometry_features
from fesnet.model.inference import spot_video
from fesnet.model.peer import LandmarkPeer, PeerConfig, peer_probs


def test_probabilities_cross_one_half_at_k() -> None:
    geom = np.zeros((3, GEOMETRY_DIMS), np.float32)
    geom[:, Z_ALL] = (2.0, 4.0, 9.0)
    p = peer_probs(geom, k=4.0)
    assert p.shape == (3, 3) and np.allclose(p.sum(axis=1), 1.0)
    expr = p[:, 1] + p[:, 2]
    assert expr[0] < 0.5 < expr[2] and expr[1] == pytest.approx(0.5)
    assert np.allclose(p[:, 1], p[:, 2])  # ME vs MaE is left to the duration rules
    off = PeerConfig(k=4.0, k_off=2.0).merger_config().off_threshold
    assert off == pytest.approx(float(peer_probs(geom[:1], k=4.0)[0, 1:].sum()), abs=1e-6)


def test_peer_spots_a_long_and_a_short_expression(two_identities) -> None:
    """Landmarks only: a 1.5 s lip-corner pull is a MaE, a 0.3 s one an ME, labelled by the
    merger's duration rules; the crops are never looked at."""
    face = two_identities[0].landmarks * (112 / 256)
    rng = np.random.default_rng(0)
    seq = face[None] + rng.normal(0, 0.15, (1500, *face.shape))
    for frames, amp in ((slice(700, 790), 2.5), (slice(1100, 1118), 2.5)):
        for g in (CORNER_L, CORNER_R):
            seq[frames, list(g)] += (0.0, -amp)
    geom = geometry_features(seq)
    peer = LandmarkPeer()
    crops = np.zeros((len(seq), 1, 1, 3), np.uint8)
    pred = spot_video(peer, crops, peer.cfg.merger_config(), 8, geom)
    labels = [(label, on, off) for on, off, label in pred.intervals]
    assert [lab for lab, *_ in labels] == [2, 1], labels
    (_, on1, off1), (_, on2, off2) = labels
    assert abs(on1 - 700) <= 6 and abs(off1 - 789) <= 8
    assert abs(on2 - 1100) <= 6 and abs(off2 - 1117) <= 8
    with pytest.raises(ValueError, match="geom is required"):
        peer.window(np.zeros((1, 32, 0)), np.zeros((1, 32, 0)))
