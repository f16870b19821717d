"""Stand-ins for the calibration tests: a backend whose scores are readable from the pixels,
clips made of such pixels, and an aligner that treats a frame as its own crop.

``LevelBackend``: the red channel's mean / 255 is the frame's p_expr and the green channel's mean
/ 255 the ME share of it, so a test writes the scores it wants into the crops and the REAL
Spotter, merger and CLI run on them. Values are quantised to the centres of 16-level bins, so
video compression (a few levels of error) does not change them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fesnet.model.data.align import AlignResult

SIZE = 112


def quantise(x: np.ndarray) -> np.ndarray:
    return (np.floor(np.asarray(x, np.float64) / 16.0) * 16.0 + 8.0).clip(8, 248)


class LevelBackend:
    name = "level"

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = quantise(frames_u8[..., :2].reshape(len(frames_u8), -1, 2).mean(axis=1)) / 255.0
        x = f.astype(np.float32)[:, :, None, None]  # (N, 2, 1, 1)
        return x, x.copy()

    def window(self, x_prime: np.ndarray, x_atten: np.ndarray) -> np.ndarray:
        e = x_prime[:, :, 0, 0, 0].astype(np.float64)  # (B, T)
        me = x_prime[:, :, 1, 0, 0].astype(np.float64)
        probs = np.stack([1.0 - e, e * me, e * (1.0 - me)], axis=-1)
        return probs.astype(np.float32)


@dataclass
class Clip:
    video_id: str
    crops: np.ndarray  # (N, 112, 112, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64
    subject: str = "test"
    landmarks: np.ndarray | None = None  # (N, 468, 2) crop pixels, for the geometry channel


def level_crops(levels: np.ndarray, me_share: np.ndarray) -> np.ndarray:
    """(N,) p_expr and ME share in [0, 1] -> flat crops (N, 112, 112, 3) RGB uint8."""
    n = len(levels)
    crops = np.full((n, SIZE, SIZE, 3), 128, np.uint8)
    crops[..., 0] = quantise(np.asarray(levels) * 255.0).astype(np.uint8)[:, None, None]
    crops[..., 1] = quantise(np.asarray(me_share) * 255.0).astype(np.uint8)[:, None, None]
    return crops


def make_clip(
    n: int,
    events: list[tuple[int, int, int]],
    rest: float,
    rest_noise: float,
    seed: int,
    peak: float = 0.9,
) -> Clip:
    """A 60 Hz clip: resting p_expr ``rest`` +- noise, expressions (onset, offset, label) with a
    smooth bump up to ``peak`` that starts and ends at the labelled frames."""
    rng = np.random.default_rng(seed)
    level = rest + rest_noise * rng.uniform(-1.0, 1.0, n)
    share = np.full(n, 0.5)
    labels = np.zeros(n, np.int64)
    for onset, offset, label in events:
        k = offset - onset + 1
        bump = np.sin(np.linspace(0.15, np.pi - 0.15, k))
        level[onset : offset + 1] = np.maximum(level[onset : offset + 1], peak * bump)
        share[onset : offset + 1] = 0.9 if label == 1 else 0.1
        labels[onset : offset + 1] = label
    return Clip(f"clip{seed}", level_crops(np.clip(level, 0, 1), share), labels)


class FrameIsCropAligner:
    """A frame is its own aligned face when it is bright enough; a dark frame has no face."""

    crop_size = SIZE

    def align(self, frame_bgr: np.ndarray) -> AlignResult:
        if frame_bgr.mean() < 20:
            return AlignResult(None, 0, None, None)
        import cv2

        crop = cv2.resize(frame_bgr, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        return AlignResult(np.ascontiguousarray(crop), 1, np.zeros((468, 2), np.float32), None)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def write_video(path: Path, crops_rgb: np.ndarray, fps: float = 60.0) -> Path:
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (SIZE, SIZE))
    for crop in crops_rgb:
        out.write(np.ascontiguousarray(crop[:, :, ::-1]))
    out.release()
    return path
