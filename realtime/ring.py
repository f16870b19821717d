"""Pre-allocated ring of aligned crops, their cached per-frame encoder features, and slot metadata.

The decisive streaming fact (DESIGN.md): everything in LSDM up to x' and X_Atten is per frame, so
the encoder runs once when a slot enters the ring and a window only gathers cached features.

Storage is *mirrored*: slot ``s`` is written at ``s % C`` and at ``s % C + C`` of a ``2C``
buffer, so every window of up to ``C`` consecutive slots is one contiguous block and
:meth:`window` returns views with no copy. Writing twice costs two small memcpy per slot;
gathering would cost a ``(T, ...)`` copy per window.

Slot numbers grow monotonically from 0 after :meth:`reset`; only the newest ``capacity_slots``
slots are held.
"""

from __future__ import annotations

import numpy as np

from .types import SlotMeta


class FeatureRing:
    def __init__(
        self,
        capacity_slots: int,
        x_prime_shape: tuple[int, ...],
        x_atten_shape: tuple[int, ...],
        crop_shape: tuple[int, int, int] = (112, 112, 3),
        keep_crops: bool = True,
    ) -> None:
        if capacity_slots < 1:
            raise ValueError(f"capacity_slots must be >= 1, got {capacity_slots}")
        c = capacity_slots
        self.capacity_slots = c
        self.x_prime = np.zeros((2 * c, *x_prime_shape), np.float32)
        self.x_atten = np.zeros((2 * c, *x_atten_shape), np.float32)
        self.crops = np.zeros((2 * c, *crop_shape), np.uint8) if keep_crops else None
        self.pts_s = np.zeros(2 * c, np.float64)
        self.source_index = np.zeros(2 * c, np.int64)
        self.t_capture_ns = np.zeros(2 * c, np.int64)
        self.n_slots = 0  # slots written since the last reset; the next slot number

    def reset(self) -> None:
        """Forget every slot (after a face loss): the next slot is slot 0 again."""
        self.n_slots = 0

    @property
    def oldest_slot(self) -> int:
        return max(0, self.n_slots - self.capacity_slots)

    def append(
        self,
        meta: SlotMeta,
        x_prime: np.ndarray,
        x_atten: np.ndarray,
        crop: np.ndarray | None = None,
    ) -> int:
        """Store one slot; returns its slot number."""
        slot = self.n_slots
        i = slot % self.capacity_slots
        for j in (i, i + self.capacity_slots):
            self.x_prime[j] = x_prime
            self.x_atten[j] = x_atten
            if self.crops is not None and crop is not None:
                self.crops[j] = crop
            self.pts_s[j] = meta.pts_s
            self.source_index[j] = meta.source_index
            self.t_capture_ns[j] = meta.t_capture_ns
        self.n_slots += 1
        return slot

    def _check(self, start_slot: int, n: int) -> int:
        if n > self.capacity_slots:
            raise ValueError(f"window of {n} slots exceeds ring capacity {self.capacity_slots}")
        if start_slot < self.oldest_slot or start_slot + n > self.n_slots:
            raise IndexError(
                f"slots [{start_slot}, {start_slot + n}) not held (have "
                f"[{self.oldest_slot}, {self.n_slots}))"
            )
        return start_slot % self.capacity_slots

    def window(self, start_slot: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(1, n, ...) views of x_prime and x_atten for slots [start_slot, start_slot + n)."""
        i = self._check(start_slot, n)
        return self.x_prime[None, i : i + n], self.x_atten[None, i : i + n]

    def window_crops(self, start_slot: int, n: int) -> np.ndarray:
        """(n, 112, 112, 3) view of the crops (naive mode re-encodes them)."""
        if self.crops is None:
            raise RuntimeError("this ring does not keep crops")
        i = self._check(start_slot, n)
        return self.crops[i : i + n]

    def meta(self, slot: int) -> SlotMeta:
        i = self._check(slot, 1)
        return SlotMeta(
            pts_s=float(self.pts_s[i]),
            source_index=int(self.source_index[i]),
            t_capture_ns=int(self.t_capture_ns[i]),
        )

    def latest_crop(self) -> np.ndarray | None:
        if self.crops is None or self.n_slots == 0:
            return None
        return self.crops[(self.n_slots - 1) % self.capacity_slots]


class SlotTimeline:
    """Slot -> source-timeline metadata for longer than the feature ring holds.

    An expression's final event may refer to an onset seconds before the newest slot (a long MaE
    plus the merger's commit delay), further back than the 32-slot window; 3 numbers per slot are
    cheap to keep for ``capacity_slots`` (default 10 minutes at 60 Hz).
    """

    def __init__(self, capacity_slots: int = 36_000) -> None:
        self.capacity_slots = capacity_slots
        self.pts_s = np.zeros(capacity_slots, np.float64)
        self.source_index = np.zeros(capacity_slots, np.int64)
        self.t_capture_ns = np.zeros(capacity_slots, np.int64)
        self.n_slots = 0

    def reset(self) -> None:
        self.n_slots = 0

    def append(self, meta: SlotMeta) -> int:
        slot = self.n_slots
        i = slot % self.capacity_slots
        self.pts_s[i] = meta.pts_s
        self.source_index[i] = meta.source_index
        self.t_capture_ns[i] = meta.t_capture_ns
        self.n_slots += 1
        return slot

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
