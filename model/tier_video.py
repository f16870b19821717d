"""A whole aligned video through a :class:`~.tier.ModelTier`, as a stream would send it: the
offline path's twin on the tier (``inference.predict_windows`` is the other).

What holds: the windows are the offline ones (``inference.window_starts``), each requested in
the step that sends its last slot; a slot whose crop equals the previous slot's goes as a repeat
(the tier copies the features on its device, as for a 30 FPS camera), so every distinct crop is
encoded once. On the CPU in fp32 the probabilities equal ``predict_windows``'s up to float
summation order (tests/test_tier.py), so the two can be scored by the same merger and metrics and
only the tier's precision differs (scripts/tier_f1.py compares fp16 with fp32 this way).
"""

from __future__ import annotations

import numpy as np

from .inference import window_starts
from .tier import ModelTier, TierBatch

DEFAULT_SLOTS_PER_STEP = 16


def repeats_previous(crops: np.ndarray) -> np.ndarray:
    """(N,) bool: slot i shows the same crop as slot i - 1 (never slot 0)."""
    same = np.zeros(len(crops), bool)
    if len(crops) > 1:
        flat = crops.reshape(len(crops), -1)
        same[1:] = (flat[1:] == flat[:-1]).all(axis=1)
    return same


def tier_video_windows(
    tier: ModelTier,
    crops: np.ndarray,
    stride_frames: int,
    geom: np.ndarray | None = None,
    slots_per_step: int = DEFAULT_SLOTS_PER_STEP,
) -> tuple[list[int], np.ndarray]:
    """Aligned 60 Hz crops (N, H, W, 3) uint8 (and geometry vectors (N, G) for a network that
    reads them) -> (starts, window probabilities (W, T, 3)), one stream of ``tier``."""
    t = tier.window_frames
    starts = window_starts(len(crops), t, stride_frames)
    if not starts:
        return [], np.zeros((0, t, 3), np.float32)
    if slots_per_step + t > tier.ring_slots:
        raise ValueError(f"ring_slots {tier.ring_slots} cannot hold a window ({t}) and a step of "
                         f"{slots_per_step} slots")
    has_crop = ~repeats_previous(crops)
    ends = np.asarray(starts) + t  # ascending; a window is ready once its last slot is sent
    probs = []
    h = tier.open("video")
    try:
        for first in range(0, len(crops), slots_per_step):
            end = min(first + slots_per_step, len(crops))
            hc = has_crop[first:end]
            lo, hi = np.searchsorted(ends, [first, end], "right")
            due = starts[lo:hi]
            batch = TierBatch.of_stream(
                h, np.arange(first, end), crops[first:end][hc], has_crop=hc,
                geom=None if geom is None else geom[first:end], window_starts=due,
                image_size=tier.image_size)
            result = tier.step(batch)
            if result.missing.any():
                raise RuntimeError("the tier lost slots of a window it was sent in order")
            probs.append(result.probs)
    finally:
        tier.close(h)
    return starts, np.concatenate(probs).astype(np.float32)
