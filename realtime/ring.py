"""Pre-allocated ring of per-slot features, and the slot -> source timeline.

The decisive streaming fact (DESIGN.md): everything in LSDM up to x' and X_Atten is per frame, so
the encoder runs once when a slot enters the ring and a window only gathers cached features.

:class:`FeatureRing` holds named per-slot arrays (``x_prime``, ``x_atten``, and the crops when
the naive engine re-encodes them): what a slot needs is declared once as a ``{name: SlotArray}``
spec, so a new per-slot feature is one more entry, stored and windowed like the others.

Storage is *mirrored*: slot ``s`` is written at ``s % C`` and at ``s % C + C`` of a ``2C``
buffer, so every window of up to ``C`` consecutive slots is one contiguous block and
:meth:`FeatureRing.window` returns views with no copy. Writing twice costs two small memcpy per
slot; gathering would cost a ``(T, ...)`` copy per window.

:class:`SlotTimeline` is the one record of where each slot came from (source time, source frame,
capture time), kept far longer than the ring's features: an event may refer to an onset seconds
back.

Slot numbers grow monotonically from 0 after ``reset``; the ring holds the newest
``capacity_slots`` slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .types import SlotMeta


@dataclass(frozen=True)
class SlotArray:
    """Shape and dtype of one per-slot feature."""

    shape: tuple[int, ...]
    dtype: Any = np.float32


class FeatureRing:
    def __init__(self, capacity_slots: int, arrays: Mapping[str, SlotArray]) -> None:
        if capacity_slots < 1:
            raise ValueError(f"capacity_slots must be >= 1, got {capacity_slots}")
        if not arrays:
            raise ValueError("a feature ring needs at least one per-slot array")
        c = capacity_slots
        self.capacity_slots = c
        self.arrays = {
            name: np.zeros((2 * c, *spec.shape), spec.dtype) for name, spec in arrays.items()
        }
        self.n_slots = 0  # slots written since the last reset; the next slot number

    def reset(self) -> None:
        """Forget every slot (a new segment): the next slot is slot 0 again."""
        self.n_slots = 0

    @property
    def oldest_slot(self) -> int:
        return max(0, self.n_slots - self.capacity_slots)

    def append(self, values: Mapping[str, np.ndarray]) -> int:
        """Store one slot (a value for every array of the spec); returns its slot number."""
        if values.keys() != self.arrays.keys():
            raise KeyError(f"slot values {sorted(values)} != ring arrays {sorted(self.arrays)}")
        slot = self.n_slots
        i = slot % self.capacity_slots
        for name, buf in self.arrays.items():
            buf[i] = buf[i + self.capacity_slots] = values[name]
        self.n_slots += 1
        return slot

    def window(self, start_slot: int, n: int) -> dict[str, np.ndarray]:
        """(n, ...) views of every array for slots [start_slot, start_slot + n)."""
        if n > self.capacity_slots:
            raise ValueError(f"window of {n} slots exceeds ring capacity {self.capacity_slots}")
        if start_slot < self.oldest_slot or start_slot + n > self.n_slots:
            raise IndexError(
                f"slots [{start_slot}, {start_slot + n}) not held (have "
                f"[{self.oldest_slot}, {self.n_slots}))"
            )
        i = start_slot % self.capacity_slots
        return {name: buf[i : i + n] for name, buf in self.arrays.items()}


class SlotTimeline:
    """Slot -> source-timeline metadata for longer than the feature ring holds.

    An expression's final event may refer to an onset seconds before the newest slot (a long MaE
    plus the merger's commit delay), further back than the 32-slot window; 3 numbers per slot are
    cheap to keep for ``capacity_slots`` (default 10 minutes at 60 Hz).
    """

    def __init__(self, capacity_slots: int = 36_000, region_dims: int = 0) -> None:
        self.capacity_slots = capacity_slots
        self.pts_s = np.zeros(capacity_slots, np.float64)
        self.source_index = np.zeros(capacity_slots, np.int64)
        self.t_capture_ns = np.zeros(capacity_slots, np.int64)
        # With the geometry channel: each slot's region RMS displacements, so a final event can
        # say which regions moved over its whole interval (longer than the ring holds).
        self.region_rms = np.zeros((capacity_slots, region_dims), np.float32)
        self.n_slots = 0

    def reset(self) -> None:
        self.n_slots = 0

    def append(self, meta: SlotMeta, region_rms: np.ndarray | None = None) -> int:
        slot = self.n_slots
        i = slot % self.capacity_slots
        self.pts_s[i] = meta.pts_s
        self.source_index[i] = meta.source_index
        self.t_capture_ns[i] = meta.t_capture_ns
        if region_rms is not None:
            self.region_rms[i] = region_rms
        self.n_slots += 1
        return slot

    def regions(self, first: int, last: int) -> np.ndarray:
        """Region RMS of slots ``first .. last`` (inclusive) that are still held: (K, R)."""
        first = max(first, self.n_slots - self.capacity_slots, 0)
        last = min(last, self.n_slots - 1)
        idx = np.arange(first, last + 1) % self.capacity_slots
        return self.region_rms[idx]

    def meta(self, slot: int) -> SlotMeta:
        """Metadata of ``slot``; slots outside what is held are clamped to the nearest held one."""
        if self.n_slots == 0:
            raise IndexError("empty timeline")
        slot = min(max(slot, self.n_slots - self.capacity_slots, 0), self.n_slots - 1)
        i = slot % self.capacity_slots
        return SlotMeta(
            pts_s=float(self.pts_s[i]),
            source_index=int(self.source_index[i]),
            t_capture_ns=int(self.t_capture_ns[i]),
        )
