"""Types shared by the dataset loaders: a labelled source video, the loaders' error and the
reader of a source that decodes forward only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..metrics import intervals_to_labels

LABEL_ME = 1
LABEL_MAE = 2


class DatasetError(Exception):
    """A dataset on disk does not match the layout its loader expects (message says what/where)."""


@dataclass(frozen=True)
class VideoRecord:
    """One source video with its labelled expression intervals.

    ``frames`` is either the ordered list of frame image files or the path of one video file.
    ``intervals`` are ``(onset, offset, label)`` in *source* frame indices (0-based, inclusive),
    label 1 = ME, 2 = MaE. ``fps`` is the dataset's nominal frame rate; frame ``i`` is taken to be
    captured at ``i / fps`` seconds.
    """

    video_id: str
    subject: str
    fps: float
    frames: list[Path] | Path
    intervals: list[tuple[int, int, int]] = field(default_factory=list)
    dataset: str = ""

    @property
    def n_frames(self) -> int | None:
        """Number of source frames (None for a video file: known only after decoding)."""
        return None if isinstance(self.frames, Path) else len(self.frames)

    def frame_labels(self, n_frames: int) -> np.ndarray:
        """Per-source-frame class ids (n_frames,) int64; intervals are clipped to the video."""
        return labels_from_intervals(self.intervals, n_frames)


def labels_from_intervals(intervals: list[tuple[int, int, int]], n_frames: int) -> np.ndarray:
    """Class id per frame (n_frames,) int64 from inclusive intervals clipped to the video
    (dataset label sheets may run past the last frame); later intervals win."""
    clipped = [
        (max(int(on), 0), min(int(off), n_frames - 1), int(label))
        for on, off, label in intervals
        if min(int(off), n_frames - 1) >= max(int(on), 0)
    ]
    return intervals_to_labels(clipped, n_frames)


def resolve_offset(onset: int, apex: int, offset: int) -> int:
    """The offset to use for a label row; rows without a usable offset are completed.

    Both datasets contain rows whose offset is missing (CAS(ME)^2 writes 0, SAMM-LV -1), i.e.
    only onset and apex were annotated. We mirror the onset phase around the apex
    (offset = apex + (apex - onset)), the symmetric-profile assumption, and at least keep the apex
    frame: the expression is still counted, with a plausible extent, instead of being dropped.
    """
    if offset > 0 and offset >= onset:
        return offset
    if apex >= onset > 0:
        return apex + (apex - onset)
    return onset


def frame_number_to_index(numbers: list[int], number: int) -> int:
    """Index of the frame whose file number is ``number`` (or the nearest one before it).

    Label sheets give frame *numbers* as in the file names (CAS(ME)^2 img1.jpg is number 1, SAMM
    files count from their own start), so we map through the sorted numbers of the files present
    instead of assuming 0- or 1-based numbering.
    """
    import bisect

    pos = bisect.bisect_right(numbers, number) - 1
    return max(pos, 0)


def label_row_interval(
    numbers: list[int], onset: int, apex: int, offset: int, label: int
) -> tuple[tuple[int, int, int], bool]:
    """A label sheet row (frame *numbers*) -> an inclusive (onset, offset, label) interval in
    frame *indices* of the video, and whether its offset had to be completed."""
    fixed = resolve_offset(onset, apex, offset)
    lo = frame_number_to_index(numbers, onset)
    hi = min(frame_number_to_index(numbers, fixed), len(numbers) - 1)
    return (lo, max(hi, lo), label), fixed != offset


class ForwardReader:
    """``read(i)`` over frames that can only be decoded in order (a video file, a stream through
    a codec). Frames before ``i`` that are not asked for are decoded and dropped; the last one is
    kept, so asking for it again costs nothing; asking for an earlier one decodes again from the
    start (``restart()`` gives a fresh iterator over the same frames). Past the end: IndexError."""

    def __init__(self, restart: Callable[[], Iterator[np.ndarray]]) -> None:
        self._restart = restart
        self._frames: Iterator[np.ndarray] | None = None
        self._next = 0
        self._last: np.ndarray | None = None

    def __call__(self, index: int) -> np.ndarray:
        if index < 0:
            raise IndexError(f"frame {index}: indices start at 0")
        if index == self._next - 1 and self._last is not None:
            return self._last
        if self._frames is None or index < self._next:
            self.close()
            self._frames, self._next, self._last = self._restart(), 0, None
        while self._next <= index:
            try:
                self._last = next(self._frames)
            except StopIteration:
                raise IndexError(f"frame {index} is past the end ({self._next} frames)") from None
            self._next += 1
        assert self._last is not None
        return self._last

    def close(self) -> None:
        """Let go of the source (a generator's ``finally`` runs); a later read reopens it."""
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()
        self._frames = None
