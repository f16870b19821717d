"""Training windows from aligned videos, with expression windows oversampled.

A window is ``window_frames`` consecutive 60 Hz slots of one :class:`AlignedVideo`; its first frame
is the reference frame FESNet compares against. Expression frames are rare (a few percent), so a
fraction ``expression_fraction`` of the windows is drawn to overlap an expression interval: an
interval is chosen uniformly (short MEs as often as long MaEs), then a start whose window overlaps
it. The rest start uniformly anywhere. Each item is reproducible from (seed, epoch, index).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .preprocess import AlignedVideo

logger = logging.getLogger(__name__)


class WindowDataset(Dataset):
    """Items are (frames uint8 (T, 112, 112, 3), labels int64 (T,)) with T = ``window_frames``.

    Augmentation (``augment=True``) is consistent across a window so it cannot look like motion:
    one brightness gain for all frames and an optional horizontal flip of all frames.
    """

    def __init__(
        self,
        videos: Sequence[AlignedVideo],
        window_frames: int = 32,
        windows_per_epoch: int | None = None,
        expression_fraction: float = 0.5,
        augment: bool = False,
        brightness: tuple[float, float] = (0.8, 1.2),
        seed: int = 0,
    ) -> None:
        if not 0.0 <= expression_fraction <= 1.0:
            raise ValueError("expression_fraction must be in [0, 1]")
        self.window_frames = int(window_frames)
        self.videos = [v for v in videos if len(v) >= self.window_frames]
        if len(self.videos) < len(videos):
            logger.warning(
                "%d videos shorter than %d frames skipped",
                len(videos) - len(self.videos), self.window_frames,
            )
        if not self.videos:
            raise ValueError(f"no video has at least {self.window_frames} frames")
        self.expression_fraction = float(expression_fraction)
        self.augment = bool(augment)
        self.brightness = brightness
        self.seed = int(seed)
        self.epoch = 0
        total = sum(len(v) for v in self.videos)
        self.windows_per_epoch = int(windows_per_epoch or max(total // self.window_frames, 1))
        self._lengths = np.array([len(v) for v in self.videos], np.float64)
        self._intervals = [
            (vi, onset, offset)
            for vi, v in enumerate(self.videos)
            for onset, offset, _ in v.intervals
        ]

    def set_epoch(self, epoch: int) -> None:
        """Draw different windows in each epoch (still reproducible)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.windows_per_epoch

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        """(video index, start slot) of one window."""
        t = self.window_frames
        if self._intervals and rng.random() < self.expression_fraction:
            vi, onset, offset = self._intervals[int(rng.integers(len(self._intervals)))]
            n = len(self.videos[vi])
            lo, hi = max(onset - t + 1, 0), min(offset, n - t)
            return vi, int(rng.integers(lo, max(hi, lo) + 1))
        vi = int(rng.choice(len(self.videos), p=self._lengths / self._lengths.sum()))
        return vi, int(rng.integers(0, len(self.videos[vi]) - t + 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        vi, start = self.sample(rng)
        video = self.videos[vi]
        frames = video.crops[start : start + self.window_frames]
        labels = video.labels[start : start + self.window_frames]
        if self.augment:
            gain = rng.uniform(*self.brightness)
            frames = np.clip(frames.astype(np.float32) * gain, 0, 255).astype(np.uint8)
            if rng.random() < 0.5:
                frames = frames[:, :, ::-1]
        return (
            torch.from_numpy(np.ascontiguousarray(frames)),
            torch.from_numpy(labels.astype(np.int64, copy=True)),
        )


def class_counts(videos: Sequence[AlignedVideo], num_classes: int = 3) -> np.ndarray:
    """Number of slots per class (num_classes,) int64 over all videos."""
    counts = np.zeros(num_classes, np.int64)
    for v in videos:
        counts += np.bincount(v.labels, minlength=num_classes)[:num_classes]
    return counts


def class_weights(videos: Sequence[AlignedVideo], num_classes: int = 3) -> torch.Tensor:
    """Inverse class frequency w_c = 1 / f_c (the paper's weighted CE), normalised to mean 1.

    A class absent from ``videos`` gets weight 0 (it contributes no loss terms anyway), and the
    mean is taken over the present classes, so the loss scale does not depend on rarity.
    """
    counts = class_counts(videos, num_classes).astype(np.float64)
    if counts.sum() == 0:
        raise ValueError("no frames to weight")
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / counts[present]
    weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)
