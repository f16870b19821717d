"""The streaming engine: which windows to score, and scoring them in one batch-shaped call.

:class:`WindowScheduler` yields exactly the window starts of
:func:`fesnet.model.inference.window_starts` as slots arrive: ``0, s, 2s, ...`` as soon as each
window's last slot is in the ring, and at the end of the stream the tail window flush with the end.
That, the same backend functions and the same merger are why streaming equals offline.

:class:`Engine` wraps a backend (``encode`` per frame, ``window`` per batch of windows). ``step``
takes ready windows from any number of streams and scores them in one ``backend.window`` call,
so several cameras can share the model (and the model tier can move to a batching server as
just another backend). ``mode="naive"`` re-encodes all 32 crops of every window, the baseline of
the cached-vs-naive benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fesnet.model.backends import Backend

from .types import WindowRequest

ENGINE_MODES = ("cached", "naive")


class WindowScheduler:
    """Window starts for a stream whose slots arrive one by one."""

    def __init__(self, window_frames: int, stride_frames: int) -> None:
        if stride_frames < 1:
            raise ValueError(f"stride_frames must be >= 1, got {stride_frames}")
        if window_frames < 1:
            raise ValueError(f"window_frames must be >= 1, got {window_frames}")
        self.window_frames = window_frames
        self.stride_frames = stride_frames
        self.last_start: int | None = None

    def reset(self) -> None:
        self.last_start = None

    def on_slots(self, n_slots: int) -> list[int]:
        """Starts that became ready now that ``n_slots`` slots exist (call after every append)."""
        t, s = self.window_frames, self.stride_frames
        ready: list[int] = []
        nxt = 0 if self.last_start is None else self.last_start + s
        while nxt + t <= n_slots:
            ready.append(nxt)
            self.last_start = nxt
            nxt += s
        return ready

    def on_end(self, n_slots: int) -> list[int]:
        """The tail window flush with the end of the stream, if the regular ones missed it."""
        tail = n_slots - self.window_frames
        if tail < 0 or self.last_start == tail:
            return []
        self.last_start = tail
        return [tail]


@dataclass
class EngineTimings:
    encode_s: float = 0.0
    window_s: float = 0.0
    encoded_frames: int = 0
    windows: int = 0


class Engine:
    def __init__(self, backend: Backend, window_frames: int = 32, mode: str = "cached") -> None:
        if mode not in ENGINE_MODES:
            raise ValueError(f"engine mode must be one of {ENGINE_MODES}, got {mode!r}")
        self.backend = backend
        self.window_frames = window_frames
        self.mode = mode
        self.timings = EngineTimings()
        self.feature_shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def needs_crops(self) -> bool:
        return self.mode == "naive"

    def encode(self, crops_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 112, 112, 3) uint8 RGB crops -> per-frame (x_prime (N, ...), x_atten (N, ...))."""
        t0 = time.perf_counter()
        xp, xa = self.backend.encode(crops_u8)
        self.timings.encode_s += time.perf_counter() - t0
        self.timings.encoded_frames += len(crops_u8)
        return xp, xa

    def probe_shapes(self, crop_shape: tuple[int, int, int] = (112, 112, 3)) -> tuple:
        """Feature shapes per frame (to pre-allocate a ring), from one encode of a blank crop."""
        if self.feature_shapes is None:
            xp, xa = self.backend.encode(np.zeros((1, *crop_shape), np.uint8))
            self.feature_shapes = (tuple(xp.shape[1:]), tuple(xa.shape[1:]))
        return self.feature_shapes

    def step(self, requests: Sequence[WindowRequest]) -> list[np.ndarray]:
        """Score ready windows from any streams in one backend call -> one (T, 3) per request."""
        if not requests:
            return []
        t0 = time.perf_counter()
        if self.mode == "naive":
            crops = np.stack([_need_crops(r) for r in requests])  # (B, T, 112, 112, 3)
            b, t = crops.shape[:2]
            xp, xa = self.backend.encode(crops.reshape(b * t, *crops.shape[2:]))
            self.timings.encoded_frames += b * t
            x_prime = xp.reshape(b, t, *xp.shape[1:])  # (B, T, C', h', w')
            x_atten = xa.reshape(b, t, *xa.shape[1:])  # (B, T, C, h, w)
        elif len(requests) == 1:
            x_prime = requests[0].x_prime[None]  # (1, T, ...) view, no copy
            x_atten = requests[0].x_atten[None]
        else:
            x_prime = np.stack([r.x_prime for r in requests])  # (B, T, ...)
            x_atten = np.stack([r.x_atten for r in requests])
        probs = self.backend.window(x_prime, x_atten)  # (B, T, 3)
        self.timings.window_s += time.perf_counter() - t0
        self.timings.windows += len(requests)
        return [np.asarray(p, np.float32) for p in probs]


def _need_crops(r: WindowRequest) -> np.ndarray:
    if r.crops is None:
        raise ValueError("naive engine mode needs the window's crops in the request")
    return r.crops
