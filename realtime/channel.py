"""The hand-off between two threads of one stream, with a named drop policy.

- ``EVERY_FRAME``: a bounded queue; the producer waits for room, so nothing is ever dropped and
  memory stays bounded (video files read as fast as possible; the align -> infer hand-over).
- ``LATEST_ONLY``: a slot of ``capacity`` items (1 by default) where a new item evicts the oldest
  one; each eviction is counted as a drop. A slow consumer therefore sees fresh frames with
  bounded memory, never a growing backlog (cameras, network streams, WebRTC pushes).

Every exit path ends in :meth:`FrameChannel.close` (the consumer still gets what is queued, then
None) or :meth:`FrameChannel.cancel` (stop now: queued items are discarded and both sides are
released), so neither side can stay blocked after the other one is gone.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Generic, TypeVar

EVERY_FRAME = "every_frame"
LATEST_ONLY = "latest_only"

T = TypeVar("T")


class FrameChannel(Generic[T]):
    """Hand-off between one producer thread and one consumer, with a named drop policy."""

    def __init__(self, policy: str, capacity: int) -> None:
        if policy not in (EVERY_FRAME, LATEST_ONLY):
            raise ValueError(f"unknown drop policy {policy!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.policy = policy
        self.capacity = capacity
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._cancelled = False
        self.dropped = 0
        self.delivered = 0
        self.high_water = 0

    def put(self, item: T) -> bool:
        """Queue an item. EVERY_FRAME waits for room; returns False if the channel was cancelled
        or closed meanwhile (the item is discarded, not counted as a drop)."""
        with self._cond:
            if self.policy == EVERY_FRAME:
                while len(self._items) >= self.capacity and not (self._closed or self._cancelled):
                    self._cond.wait()
            if self._closed or self._cancelled:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The next item; None once the channel is closed and empty (or cancelled). Raises
        TimeoutError when ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed or self._cancelled:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("nothing within timeout")
                self._cond.wait(remaining)
            item = self._items.popleft()
            self.delivered += 1
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """End of stream: the consumer still gets the queued items, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Stop now: queued items are discarded and a waiting producer or consumer is released."""
        with self._cond:
            self._cancelled = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed or self._cancelled

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
