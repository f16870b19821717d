"""What crosses the network between a stream's ingest and the model tier (pure numpy, no Ray).

The ingest keeps every per-slot array (crop, cached features, geometry) in its own ring. The
model tier is stateless, so a window request must carry its T slots; it carries each *distinct*
slot once. A 30 FPS camera fills two 60 Hz slots per frame with the same features, so its
32-slot windows hold 16 distinct rows: :func:`pack_windows` sends those rows plus a (B, T) index,
and :func:`unpack_windows` gathers them back. The gather copies exact bytes, so the window head
sees the very arrays the in-process engine would have passed.

Per-slot arrays travel by name, the keyword the window head takes them by
(``x_prime``, ``x_atten`` and, for a checkpoint with a geometry channel, ``geom``): the wire
format carries whatever arrays the head reads, not a hard-coded pair.

:class:`WireStats` counts the bytes of every call in both directions; docs/SCALING.md reports
them per source frame.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WireWindows:
    """B windows of T slots: ``rows[name]`` (U, ...) distinct slots, ``index`` (B, T) into them."""

    rows: dict[str, np.ndarray]
    index: np.ndarray

    @property
    def n_windows(self) -> int:
        return int(self.index.shape[0])

    @property
    def window_frames(self) -> int:
        return int(self.index.shape[1])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.rows))

    @property
    def nbytes(self) -> int:
        return int(self.index.nbytes + sum(a.nbytes for a in self.rows.values()))


def pack_windows(arrays: Mapping[str, np.ndarray]) -> WireWindows:
    """(B, T, ...) arrays by name -> distinct rows and an index. A slot whose every array equals
    the previous slot's (byte for byte) is sent once."""
    if not arrays:
        raise ValueError("a window needs at least one per-slot array")
    shapes = {name: a.shape[:2] for name, a in arrays.items()}
    if len(set(shapes.values())) != 1 or any(len(s) != 2 for s in shapes.values()):
        raise ValueError(f"per-slot arrays must all be (B, T, ...), got {shapes}")
    b, t = next(iter(shapes.values()))
    flat = {name: np.ascontiguousarray(a).reshape(b * t, -1) for name, a in arrays.items()}
    # same[i]: slot i repeats slot i - 1 (never across a window boundary).
    same = np.zeros(b * t, bool)
    if t > 1:
        same[1:] = True
        same[::t] = False
        for f in flat.values():
            same[1:] &= (f[1:] == f[:-1]).all(axis=1)
    keep = ~same
    row_of_slot = np.cumsum(keep) - 1  # (B*T,) row each slot reads
    rows = {
        name: np.ascontiguousarray(a.reshape(b * t, *a.shape[2:])[keep])
        for name, a in arrays.items()
    }
    return WireWindows(rows, row_of_slot.reshape(b, t).astype(np.int32))


def unpack_windows(w: WireWindows) -> dict[str, np.ndarray]:
    """The (B, T, ...) arrays :func:`pack_windows` was given (exact copies)."""
    return {name: rows[w.index] for name, rows in w.rows.items()}  # (B, T, ...)


class WireStats:
    """Bytes and calls per direction and method (thread-safe; one per ingest process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    def add(self, key: str, nbytes: int) -> None:
        with self._lock:
            self.bytes[key] = self.bytes.get(key, 0) + int(nbytes)
            self.calls[key] = self.calls.get(key, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"bytes": dict(self.bytes), "calls": dict(self.calls)}

    def merge(self, other: Mapping[str, Mapping[str, int]]) -> None:
        """Add another process's :meth:`snapshot` (a stream actor's) into this one."""
        with self._lock:
            for key, n in other.get("bytes", {}).items():
                self.bytes[key] = self.bytes.get(key, 0) + int(n)
            for key, n in other.get("calls", {}).items():
                self.calls[key] = self.calls.get(key, 0) + int(n)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(self.bytes.values())


def array_bytes(arrays: tuple[np.ndarray, ...] | list[np.ndarray] | np.ndarray) -> int:
    if isinstance(arrays, np.ndarray):
        return int(arrays.nbytes)
    return int(sum(a.nbytes for a in arrays))
