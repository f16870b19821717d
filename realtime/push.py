"""Frames pushed from outside: a WebRTC track handler (the viewers), a test or a soak feeds a
:class:`PushSource` frame by frame, from any thread, latest-only.

A frame can also be pushed still in its transport form (:meth:`PushSource.push_undecoded`): the
reader converts it on its own thread (a session's align thread), so a producer on an event loop
does no pixel work, and a frame evicted unread is never converted at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .channel import LATEST_ONLY
from .sources import Source
from .types import Frame


@dataclass(frozen=True, slots=True)
class _Undecoded:
    """A pushed frame still in its transport form (see :meth:`PushSource.push_undecoded`)."""

    decode: Callable[[], np.ndarray]
    index: int
    pts_s: float
    t_capture_ns: int


class PushSource(Source):
    """Frames pushed from outside (a WebRTC track handler), from any thread; newest frame only.

    There is no worker thread: :meth:`push` stores the frame (evicting an unread one, counted as a
    drop) and :meth:`close` ends the stream. ``fail(exc)`` ends it with an error that stop() raises.
    :meth:`push_undecoded` hands over a frame that still has to be converted to an image: the
    consumer converts it when it reads it (on its own thread), so a producer on an event loop
    does no pixel work, and a frame evicted unread is never converted at all.
    """

    drop_policy = LATEST_ONLY
    live = True

    def __init__(self, stream: str = "push", capacity: int | None = None) -> None:
        super().__init__(stream=stream, capacity=capacity)
        self._lock = threading.Lock()

    def start(self) -> PushSource:
        self._started = True
        return self

    def push(self, image_bgr: np.ndarray, pts_s: float, t_capture_ns: int | None = None) -> bool:
        """Offer one frame; False once the source is closed. A frame that is not a BGR uint8
        (H, W, 3) image (H, W >= 2) raises ValueError here, at the producer, instead of failing
        the spotter's worker later."""
        check_image(image_bgr, "push()")
        with self._lock:
            return self._emit(image_bgr, pts_s, t_capture_ns)

    def push_undecoded(
        self, decode: Callable[[], np.ndarray], pts_s: float, t_capture_ns: int | None = None
    ) -> bool:
        """Offer one frame as ``decode() -> BGR uint8 (H, W, 3)``, called by the reader; False
        once the source is closed. The reader gets a ValueError if ``decode`` returns no image."""
        with self._lock:
            item = _Undecoded(
                decode,
                self.frames_read,
                float(pts_s),
                time.monotonic_ns() if t_capture_ns is None else t_capture_ns,
            )
            self.frames_read += 1
            return self.channel.put(item)  # type: ignore[arg-type]

    def read(self, timeout: float | None = None) -> Frame | None:
        item: Frame | _Undecoded | None = self.channel.get(timeout)  # type: ignore[assignment]
        if not isinstance(item, _Undecoded):
            return item
        t0 = time.perf_counter()
        image = item.decode()
        decode_s = time.perf_counter() - t0
        check_image(image, "a pushed frame's decode()")
        return Frame(image, item.index, item.pts_s, item.t_capture_ns, self.stream, self.live,
                     decode_s)

    def close(self) -> None:
        self.channel.close()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self.channel.close()

    def stop(self, timeout: float = 5.0) -> None:
        self.channel.cancel()
        self.raise_error()


def check_image(image: Any, where: str) -> None:
    """ValueError unless ``image`` is a BGR uint8 (H, W, 3) numpy image with H, W >= 2."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"{where} takes a BGR uint8 numpy image")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 2:
        raise ValueError(f"{where} takes an (H, W, 3) image, got shape {image.shape}")
