"""The geometry channel streams exactly as it is computed offline: the landmark peer and a
geometry network give the same events (and region shares) frame by frame as over the whole
video, at 60 FPS and for a 30 FPS source whose frames fill two slots each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spot_helpers import make_spotter
from test_streaming_equivalence import assert_same_events, offline_tuples, streaming_tuples

from fesnet.model.backends import TorchBackend
from fesnet.model.data.landmarks import BROW_L_INNER, BROW_R_INNER, CORNER_L, CORNER_R
from fesnet.model.data.resample import resample_indices
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.geometry import geometry_features, region_shares
from fesnet.model.head import with_geometry
from fesnet.model.inference import spot_video
from fesnet.model.peer import LandmarkPeer, PeerConfig
from fesnet.realtime.tracking import Feed
from fesnet.realtime.types import Frame

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def face_track(face: np.ndarray, n: int, fps: float) -> np.ndarray:
    """Landmarks (n, 468, 2) with jitter, a 1.5 s mouth expression and a 0.3 s brow one."""
    rng = np.random.default_rng(3)
    seq = face[None] + rng.normal(0, 0.15, (n, *face.shape))
    for (a, b), groups, vec in (((4.0, 5.5), (CORNER_L, CORNER_R), (0.0, -2.5)),
                                ((7.0, 7.3), (BROW_L_INNER, BROW_R_INNER), (0.0, -2.5))):
        for g in groups:
            seq[int(a * fps) : int(b * fps), list(g)] += vec
    return seq.astype(np.float32)


def stream(backend, crops, landmarks, fps, merger, stride=8):
    spotter = make_spotter(backend, merger, stride, stream="s")
    events = []
    for i, (crop, lm) in enumerate(zip(crops, landmarks, strict=True)):
        frame = Frame(np.zeros((1, 1, 3), np.uint8), i, i / fps, 0, "s")
        events += spotter.push(Feed(frame, crop, i, lm, IDENTITY))
    return events + spotter.finish()


@pytest.fixture(scope="module")
def face(two_identities) -> np.ndarray:
    return two_identities[0].landmarks * (112 / 256)


@pytest.mark.parametrize("fps", [60.0, 30.0])
def test_the_peer_streams_as_it_scores_offline(face, fps: float) -> None:
    n_src = int(9 * fps)
    landmarks = face_track(face, n_src, fps)
    crops = np.zeros((n_src, 112, 112, 3), np.uint8)
    source_index = np.asarray(resample_indices([i / fps for i in range(n_src)], 60.0))
    peer = LandmarkPeer(PeerConfig())
    merger = peer.cfg.merger_config()
    geom = geometry_features(landmarks[source_index])
    offline = spot_video(peer, crops[source_index], merger, 8, geom)
    events = stream(peer, crops, landmarks, fps, merger)
    want = offline_tuples(offline, source_index)
    assert [(w[0], w[1]) for w in want if w[0] == "final"] == [("final", 2), ("final", 1)]
    assert_same_events(streaming_tuples(events), want)
    finals = [e for e in events if e.type == "expression" and e.state == "final"]
    for e, m in zip(finals, [x for x in offline.events if x.state == "final"], strict=True):
        assert e.regions == region_shares(geom[m.onset_slot : m.offset_slot + 1])
    assert next(iter(finals[0].regions)) == "mouth" and next(iter(finals[1].regions)) == "brows"
    assert all(e.regions is None for e in events if e.type == "expression" and e.state == "onset")


def test_a_geometry_network_streams_as_it_scores_offline(face) -> None:
    """Pixels and geometry both reach the output; the ring holds the geometry per slot."""
    torch.manual_seed(0)
    net = with_geometry(FESNet(FESNetConfig.tiny())).eval()
    with torch.no_grad():
        torch.nn.init.normal_(net.mtam.inp.weight, std=0.5)
        head = net.mtam.stages[-1]["heads"][-1]
        head.weight.mul_(40.0)
    backend = TorchBackend(net)
    n = 480
    landmarks = face_track(face, n, 60.0)
    rng = np.random.default_rng(0)
    crops = np.repeat(rng.integers(0, 255, (1, 112, 112, 3), dtype=np.uint8), n, axis=0)
    from fesnet.model.merger import MergerConfig

    merger = MergerConfig(min_expression_frames=3, on_threshold=0.6, off_threshold=0.4)
    geom = geometry_features(landmarks)
    offline = spot_video(backend, crops, merger, 8, geom)
    events = stream(backend, crops, landmarks, 60.0, merger)
    want = offline_tuples(offline, np.arange(n))
    assert any(w[0] == "final" for w in want), want  # the comparison is not vacuous
    assert_same_events(streaming_tuples(events), want)
