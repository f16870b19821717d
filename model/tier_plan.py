"""The model tier's bookkeeping, on the host and in numpy only: which ring row every slot and window
reads (model/tier.py runs the model on them).

- :class:`TierBatch`: one step's work, batch-shaped (arrays, not objects per slot, so a step of
  thousands of streams costs microseconds of Python): slots (stream handle, slot number, crop or
  a repeat of the previous slot's frame, geometry vector) and windows (stream handle, first slot).
- :class:`StreamTable`: per stream, the run of consecutive slots its ring holds, and the row of
  every slot: stream ``h``'s slot ``s`` lives at row ``h * ring_slots + s % ring_slots``; one more
  row (``trash_row``) takes what padding writes and gives what padding reads.
  :meth:`StreamTable.plan` checks a batch and says where everything goes before anything is
  written (rules in model/tier.py's docstring); :meth:`StreamTable.commit` applies it.
- :func:`plan_chunks`: a call of ``n`` items as chunks padded to fixed batch sizes (buckets).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


class TierError(ValueError):
    """A batch the tier cannot place; nothing of it was applied. The message says why."""


class TierFull(RuntimeError):
    """Every pre-allocated stream block is in use."""


@dataclass(frozen=True)
class TierBatch:
    """One step's work. Slots: ``streams``/``slots``/``has_crop`` (n,), ``crops`` (m, H, W, 3)
    uint8 for the slots with ``has_crop`` in order, ``geom`` (n, G) float32 or None. Windows:
    ``window_streams``/``window_starts`` (B,)."""

    streams: np.ndarray
    slots: np.ndarray
    has_crop: np.ndarray
    crops: np.ndarray
    geom: np.ndarray | None
    window_streams: np.ndarray
    window_starts: np.ndarray

    @classmethod
    def of_stream(
        cls,
        handle: int,
        slots: Sequence[int] | np.ndarray = (),
        crops: np.ndarray | None = None,
        *,
        has_crop: Sequence[bool] | np.ndarray | None = None,
        geom: np.ndarray | None = None,
        window_starts: Sequence[int] | np.ndarray = (),
        image_size: int = 112,
    ) -> TierBatch:
        """One stream's slots (every one with a crop unless ``has_crop`` says otherwise) and
        windows."""
        s = np.asarray(slots, np.int64).reshape(-1)
        hc = np.ones(len(s), bool) if has_crop is None else np.asarray(has_crop, bool)
        if crops is None:
            crops = np.zeros((0, image_size, image_size, 3), np.uint8)
        w = np.asarray(window_starts, np.int64).reshape(-1)
        return cls(np.full(len(s), handle, np.int64), s, hc, crops, geom,
                   np.full(len(w), handle, np.int64), w)

    @classmethod
    def concat(cls, batches: Sequence[TierBatch]) -> TierBatch:
        """Several streams' batches as one (each stream in at most one of them)."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        given = [b.geom for b in batches if b.geom is not None]
        if given and any(b.geom is None and b.n_slots for b in batches):
            raise TierError("some batches carry geometry vectors and some do not")

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in batches])

        geom = np.concatenate(given) if given else None  # batches without slots need none
        return cls(cat("streams"), cat("slots"), cat("has_crop"), cat("crops"), geom,
                   cat("window_streams"), cat("window_starts"))

    @property
    def n_slots(self) -> int:
        return len(self.slots)

    @property
    def n_windows(self) -> int:
        return len(self.window_starts)

    @property
    def nbytes(self) -> int:
        """What this batch weighs on a wire (every array, raw)."""
        arrays = [self.streams, self.slots, self.has_crop, self.crops, self.window_streams,
                  self.window_starts] + ([] if self.geom is None else [self.geom])
        return int(sum(a.nbytes for a in arrays))


@dataclass(frozen=True)
class StepResult:
    """Window probabilities (B, T, 3) float32 in the batch's order; NaN rows where ``missing``."""

    probs: np.ndarray
    missing: np.ndarray


@dataclass(frozen=True)
class SlotPlan:
    """Where one batch's slots go, checked before anything is written."""

    rows: np.ndarray  # (n,) ring row of every slot
    encode_rows: np.ndarray  # (m,) rows of the slots with a crop, in order
    copy_src: np.ndarray  # (r,) rows whose features a repeated slot takes
    copy_dst: np.ndarray  # (r,)
    streams: np.ndarray  # handles of the streams in the batch
    first: np.ndarray  # their held runs after the batch: [first, end), the newest ring_slots
    end: np.ndarray


def bucket_sizes(max_bucket: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``max_bucket`` (always included)."""
    if max_bucket < 1:
        raise ValueError(f"max_bucket must be >= 1, got {max_bucket}")
    sizes = [1 << k for k in range(max_bucket.bit_length()) if (1 << k) < max_bucket]
    return (*sizes, max_bucket)


def plan_chunks(
    n: int, buckets: Sequence[int] | None, max_bucket: int
) -> list[tuple[int, int, int]]:
    """``n`` items as chunks ``(offset, count, padded size)``: full chunks of ``max_bucket``, the
    rest padded to the smallest bucket that holds it (``buckets`` None: no padding)."""
    chunks = []
    for off in range(0, n, max_bucket):
        cnt = min(max_bucket, n - off)
        size = cnt if buckets is None else min(b for b in buckets if b >= cnt)
        chunks.append((off, cnt, size))
    return chunks


class StreamTable:
    """Open streams and the slots each holds (module docstring)."""

    def __init__(self, max_streams: int, ring_slots: int, window_frames: int,
                 image_size: int = 112, geometry_dims: int = 0) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        if ring_slots < window_frames + 1:
            raise ValueError(f"ring_slots {ring_slots} must exceed the window ({window_frames})")
        self.max_streams = max_streams
        self.ring_slots = ring_slots
        self.window_frames = window_frames
        self.image_size = image_size
        self.geometry_dims = geometry_dims
        self.trash_row = max_streams * ring_slots
        self._first = np.zeros(max_streams, np.int64)
        self._end = np.zeros(max_streams, np.int64)
        self._open = np.zeros(max_streams, bool)
        self._base = np.arange(max_streams, dtype=np.int64) * ring_slots
        self.keys: dict[int, Hashable] = {}

    # -- streams -------------------------------------------------------------------------------
    def open(self, key: Hashable = None) -> int:
        free = np.flatnonzero(~self._open)
        if len(free) == 0:
            raise TierFull(f"all {self.max_streams} streams of this tier are open")
        h = int(free[0])
        self._open[h] = True
        self._first[h] = self._end[h] = 0
        self.keys[h] = key
        return h

    def reset(self, handle: int) -> None:
        self.check_open(np.asarray([handle]))
        self._first[handle] = self._end[handle] = 0

    def close(self, handle: int) -> None:
        self.reset(handle)
        self._open[handle] = False
        self.keys.pop(handle, None)

    def held(self, handle: int) -> tuple[int, int]:
        """Slots ``[first, end)`` this stream's ring holds (first == end: none)."""
        self.check_open(np.asarray([handle]))
        first, end = int(self._first[handle]), int(self._end[handle])
        return (max(first, end - self.ring_slots), end) if end > first else (end, end)

    def check_open(self, handles: np.ndarray) -> None:
        bad = (handles < 0) | (handles >= self.max_streams)
        if bad.any() or not self._open[handles].all():
            raise TierError(f"unknown stream handle(s) among {sorted(set(handles.tolist()))[:5]}")

    # -- slots ---------------------------------------------------------------------------------
    def plan(self, batch: TierBatch) -> SlotPlan:
        """Rows, copies and the streams' new held runs of ``batch``'s slots; TierError if the
        batch cannot be placed. Vectorised over slots."""
        h = np.asarray(batch.streams, np.int64)
        s = np.asarray(batch.slots, np.int64)
        has_crop = np.asarray(batch.has_crop, bool)
        self._check_shapes(batch, h, s, has_crop)
        if len(batch.window_streams):
            self.check_open(np.asarray(batch.window_streams, np.int64))
        n, c = len(h), self.ring_slots
        if n == 0:
            e = np.zeros(0, np.int64)
            return SlotPlan(e, e, e, e, e, e, e)
        self.check_open(h)
        starts = np.ones(n, bool)
        starts[1:] = h[1:] != h[:-1]
        if ((s[1:] - s[:-1] != 1) & ~starts[1:]).any():
            raise TierError("a stream's slots in one batch must be consecutive")
        g0 = np.flatnonzero(starts)
        gh, s0 = h[g0], s[g0]
        if len(np.unique(gh)) != len(gh):
            raise TierError("a stream's slots in one batch must be together")
        sizes = np.diff(np.append(g0, n))
        if sizes.max() >= c:
            raise TierError(f"at most {c - 1} slots of one stream per batch (ring_slots {c})")
        first, end = self._first[gh], self._end[gh]
        lo = np.maximum(first, end - c)
        cont = (end > first) & (s0 >= lo) & (s0 <= end)  # continues or overlaps the held run
        new_first = np.where(cont, first, s0)
        new_end = np.where(cont, np.maximum(end, s0 + sizes), s0 + sizes)
        rows = self._base[h] + s % c
        group = np.cumsum(starts) - 1  # each slot's group
        last_crop = np.maximum.accumulate(np.where(has_crop, np.arange(n), -1))
        in_batch = last_crop >= g0[group]  # a repeat whose frame came earlier in this batch
        repeat = ~has_crop
        before = repeat & ~in_batch
        if before.any():
            gi = group[before]
            prev = s0[gi] - 1
            if not (cont[gi] & (prev >= lo[gi]) & (prev < end[gi])).all():
                raise TierError("a slot without a crop repeats the slot before it, which this "
                                "stream does not hold: send that slot's crop")
        # A group has fewer than ring_slots slots, so the row of the slot before its first is
        # not overwritten by the batch itself.
        before_row = self._base[h] + (s0[group] - 1) % c
        src = np.where(in_batch, rows[np.maximum(last_crop, 0)], before_row)
        return SlotPlan(rows, rows[has_crop], src[repeat], rows[repeat], gh, new_first, new_end)

    def commit(self, plan: SlotPlan) -> None:
        self._first[plan.streams] = plan.first
        self._end[plan.streams] = plan.end

    def _check_shapes(self, batch: TierBatch, h: np.ndarray, s: np.ndarray,
                      has_crop: np.ndarray) -> None:
        n, sz, m = len(h), self.image_size, int(has_crop.sum())
        if len(s) != n or len(has_crop) != n:
            raise TierError(f"streams, slots and has_crop differ in length: {n}, {len(s)}, "
                            f"{len(has_crop)}")
        crops = batch.crops
        if crops.dtype != np.uint8 or crops.shape != (m, sz, sz, 3):
            raise TierError(f"crops must be uint8 ({m}, {sz}, {sz}, 3) (one per slot with a "
                            f"crop), got {crops.shape} {crops.dtype}")
        g = batch.geom
        if n and (g is None) != (self.geometry_dims == 0):
            raise TierError(f"this model {'reads' if self.geometry_dims else 'reads no'} "
                            "geometry vectors: geom must be given exactly then")
        if n and g is not None and g.shape != (n, self.geometry_dims):
            raise TierError(f"geom must be ({n}, {self.geometry_dims}), got {g.shape}")
        if len(batch.window_streams) != len(batch.window_starts):
            raise TierError("window_streams and window_starts differ in length")

    # -- windows -------------------------------------------------------------------------------
    def window_rows(self, handles: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) ring rows of the windows starting at ``starts`` and (B,) whether every slot is
        held; rows of a window not held are the trash row."""
        t, c = self.window_frames, self.ring_slots
        h = np.asarray(handles, np.int64)
        w = np.asarray(starts, np.int64)
        self.check_open(h)
        first, end = self._first[h], self._end[h]
        ok = (end > first) & (w >= np.maximum(first, end - c)) & (w + t <= end)
        rows = self._base[h][:, None] + (w[:, None] + np.arange(t)) % c  # (B, T)
        rows[~ok] = self.trash_row
        return rows, ok
