"""The training-free peer: a landmark-geometry spotter with no learned weights.

It is the bar the learned path must clear (``fesnet-eval`` prints both on the same videos) and a
fallback that needs no model (``fesnet-spot run --method landmarks``). Per slot it reads one
number of the geometry channel (model/geometry.py): the overall robust z-score of how far the
brows, lids, cheeks, nose sides and mouth sit from the face's running neutral shape (head motion
removed by a rigid fit; the baseline is the stream's own trailing median and MAD). The score is
squashed to a pseudo-probability that crosses 0.5 at ``z = k``:

    p_expr = sigmoid(z - k),   probs = (1 - p_expr, p_expr / 2, p_expr / 2)

and goes through the *same* IntervalMerger as FESNet's scores: hysteresis, minimum length, gap
merging, and the duration rules, which alone decide ME (<= 0.5 s) versus MaE, since the peer's
ME and MaE scores are equal.

It is a :class:`~fesnet.model.backends.Backend`: ``encode`` returns empty pixel features (the
peer needs none) and ``window`` maps each slot's geometry vector to its probabilities, so the
streaming spotter, offline evaluation and calibration run it exactly as they run FESNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Z_ALL, GeometryConfig
from .merger import MergerConfig


@dataclass(frozen=True)
class PeerConfig:
    k: float = 3.5
    """Robust z-score at which p_expr = 0.5, the merger's on-threshold. Chosen on the
    validation videos of the training people (``scripts/ab_quality.py``: overall F1 43.6 / 43.0
    / 42.5 / 43.8 / 42.4 / 36.1 / 31.1 at k = 2 / 2.5 / 3 / 3.5 / 4 / 5 / 6)."""
    k_off: float = 2.0
    """z at which an open interval closes (hysteresis)."""

    def merger_config(self, window_frames: int = 32, fps: float = 60.0) -> MergerConfig:
        """The merger settings that turn the peer's probabilities into intervals: on at z = k,
        off below z = k_off; everything else the merger's defaults."""
        off = float(1.0 / (1.0 + np.exp(-(self.k_off - self.k))))
        return MergerConfig(fps=fps, window_frames=window_frames, fusion="latest",
                            on_threshold=0.5, off_threshold=round(off, 6))


def peer_probs(geom: np.ndarray, k: float) -> np.ndarray:
    """Geometry vectors (..., GEOMETRY_DIMS) -> probabilities (..., 3) float32."""
    z = np.asarray(geom, np.float32)[..., Z_ALL]
    p = 1.0 / (1.0 + np.exp(-(z - np.float32(k))))
    return np.stack([1.0 - p, 0.5 * p, 0.5 * p], axis=-1).astype(np.float32)


class LandmarkPeer:
    """The peer as a backend (see the module docstring)."""

    name = "landmarks"

    def __init__(self, cfg: PeerConfig | None = None, geometry: GeometryConfig | None = None):
        self.cfg = cfg or PeerConfig()
        self.geometry = geometry or GeometryConfig()

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(frames_u8)
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.float32)

    def window(
        self, x_prime: np.ndarray, x_atten: np.ndarray, geom: np.ndarray | None = None
    ) -> np.ndarray:
        if geom is None:
            raise ValueError("the landmark peer scores the geometry channel: geom is required")
        return peer_probs(geom, self.cfg.k)
