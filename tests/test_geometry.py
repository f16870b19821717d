"""The geometry channel: head motion removed, identity cancelled, causal, one threshold."""

from __future__ import annotations

import numpy as np
import pytest

from fesnet.model.data.landmarks import BROW_L_INNER, BROW_R_INNER, CORNER_L, CORNER_R
from fesnet.model.geometry import (
    DISP,
    GEOMETRY_DIMS,
    RMS,
    Z_ALL,
    GeometryConfig,
    GeometryTracker,
    geometry_features,
    region_shares,
)


@pytest.fixture(scope="module")
def face(two_identities) -> np.ndarray:
    """A real FaceMesh shape at crop scale (468, 2)."""
    return (two_identities[0].landmarks * (112 / 256)).astype(np.float64)


def sequence(face: np.ndarray, n: int, seed: int = 0, jitter: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return face[None] + rng.normal(0, jitter, (n, *face.shape))


def move(seq: np.ndarray, frames: slice, groups: tuple, vector: tuple[float, float]) -> None:
    for g in groups:
        seq[frames, list(g)] += vector


def test_streaming_equals_offline_and_reset_restarts(face) -> None:
    seq = sequence(face, 300)
    move(seq, slice(100, 160), (CORNER_L, CORNER_R), (0.0, -2.0))
    offline = geometry_features(seq)
    tracker = GeometryTracker()
    streamed = np.stack([tracker.update(p) for p in seq])
    np.testing.assert_array_equal(offline, streamed)
    assert offline.shape == (300, GEOMETRY_DIMS) and offline.dtype == np.float32
    tracker.reset()
    np.testing.assert_array_equal(tracker.update(seq[0]), offline[0])


def test_head_motion_is_removed(face) -> None:
    """The same face shapes under a drifting rotation, scale and shift give the same vectors."""
    seq = sequence(face, 200, jitter=0.1)
    move(seq, slice(80, 140), (BROW_L_INNER, BROW_R_INNER), (0.0, -2.0))
    angle = np.linspace(0, np.deg2rad(8), len(seq))
    scale = np.linspace(1.0, 1.15, len(seq))
    moved = np.empty_like(seq)
    for i, (a, s) in enumerate(zip(angle, scale, strict=True)):
        rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        moved[i] = (seq[i] - 56) @ rot.T + 56 + (3.0 * i / len(seq), -2.0 * i / len(seq))
    np.testing.assert_allclose(geometry_features(moved), geometry_features(seq), atol=1e-4)


def test_a_resting_shape_cancels_and_an_expression_stands_out(face) -> None:
    """A one-sided resting lip corner (identity) leaves no displacement once the neutral has
    settled; a brow raise does, and its region is the one reported."""
    rest = face.copy()
    rest[list(CORNER_R)] += (1.5, -1.5)
    seq = sequence(rest, 900)
    move(seq, slice(600, 720), (BROW_L_INNER, BROW_R_INNER), (0.0, -2.5))
    g = geometry_features(seq)
    quiet = g[300:590]
    assert np.abs(quiet[:, DISP]).max() < 0.02  # IOD units; the resting offset is gone
    assert np.median(g[620:700, Z_ALL]) > 8 > np.percentile(quiet[:, Z_ALL], 99)
    shares = region_shares(g[620:700])
    assert next(iter(shares)) == "brows" and shares["brows"] > 0.4
    assert abs(sum(shares.values()) - 1.0) < 0.03


def test_one_threshold_across_jitter_levels(face) -> None:
    """The z-score is relative to the stream's own noise: a face with 3x the landmark jitter
    and a 3x larger expression scores about the same."""
    zs = []
    for jitter, amp in ((0.4, 1.5), (1.2, 4.5)):
        seq = sequence(face, 900, seed=1, jitter=jitter)
        move(seq, slice(600, 720), (CORNER_L, CORNER_R), (0.0, -amp))
        zs.append(np.median(geometry_features(seq)[630:700, Z_ALL]))
    assert zs[0] > 5 and 0.5 < zs[1] / zs[0] < 2.0


def test_config_round_trip_and_validation() -> None:
    cfg = GeometryConfig(neutral_s=6.0)
    assert GeometryConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        GeometryConfig.from_dict({"neutral": 3})
    with pytest.raises(ValueError):
        GeometryConfig(smooth_slots=0)
    assert region_shares(np.zeros((4, GEOMETRY_DIMS))) == {}
    assert RMS.stop <= Z_ALL
