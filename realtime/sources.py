"""Frame sources with capture timestamps and a named drop policy.

Every source hands frames to its consumer through a :class:`~fesnet.realtime.channel.FrameChannel`:
``EVERY_FRAME`` for video files read as fast as possible (nothing is ever dropped), ``LATEST_ONLY``
for webcams, RTSP/HTTP streams, WebRTC pushes (:class:`~fesnet.realtime.push.PushSource`) and
files replayed at live pace (a new frame evicts an unread one and the eviction is counted).
Frames of a live source say so (``Frame.live``): only their staleness may make the spotter shed
windows.

A worker thread stores its first exception; :meth:`Source.stop` re-raises it. The channel is always
closed on the worker's way out (normal end, error or stop), so a consumer blocked in
:meth:`Source.read` wakes up and sees the end instead of waiting forever.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .channel import EVERY_FRAME, LATEST_ONLY, FrameChannel
from .types import Frame

logger = logging.getLogger(__name__)


MIN_FRAME_SIDE_PX = 16  # smaller frames cannot hold a face the aligner can find
STREAM_TIMEOUT_S = 10.0  # a network stream that does not answer within this is an error


class SourceError(RuntimeError):
    """A source cannot be used: it cannot be opened, or what it holds cannot be spotted (bad
    input: the CLI's exit code 2)."""


class SourceLost(ConnectionError):
    """A live source that delivered frames stopped delivering and did not come back after its
    reconnect attempts: a failure while running (exit code 1), not bad input."""


def check_frame_size(width: int, height: int, where: str) -> None:
    """SourceError for frames too small to hold a face (a 1x1 video), so bad input is reported
    as such (exit code 2) instead of failing the aligner later with a bare ValueError."""
    w, h = width, height
    if min(h, w) < MIN_FRAME_SIDE_PX:
        raise SourceError(
            f"{where}: frames are {w}x{h} px, too small to hold a face (at least "
            f"{MIN_FRAME_SIDE_PX}x{MIN_FRAME_SIDE_PX} needed)"
        )


def open_interruptibly(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a helper thread while the caller waits in short steps: OpenCV's blocking open
    of a network stream would otherwise keep Ctrl-C (KeyboardInterrupt) from the main thread
    until its own timeout. An interrupted open is left to finish on its daemon thread."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, name="source-open", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.1)
    if "error" in box:
        raise box["error"]
    return box["value"]


class Source:
    """Base: a named drop policy, a channel, an optional worker thread, error propagation.

    Subclasses with a thread implement :meth:`_run` (produce frames with :meth:`_emit` until
    ``self._stop_event`` is set or the stream ends). Use as ``with source: for frame in source:``
    or start()/read()/stop().
    """

    drop_policy: str = EVERY_FRAME
    live: bool = False  # True: frames arrive in real time (a camera, a paced replay, a push)

    def __init__(
        self,
        stream: str = "0",
        capacity: int | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        default_capacity = 1 if self.drop_policy == LATEST_ONLY else 8
        self.stream = stream
        self.channel = FrameChannel(self.drop_policy, capacity or default_capacity)
        self.on_status = on_status
        self.fps: float | None = None  # nominal frame rate when the source knows it
        self.frames_read = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = False

    # -- producer side -------------------------------------------------------------------------
    def _run(self) -> None:
        raise NotImplementedError

    def _emit(
        self,
        image: np.ndarray,
        pts_s: float,
        t_capture_ns: int | None = None,
        decode_s: float | None = None,
    ) -> bool:
        t_ns = time.monotonic_ns() if t_capture_ns is None else t_capture_ns
        frame = Frame(image, self.frames_read, float(pts_s), t_ns, self.stream, self.live, decode_s)
        self.frames_read += 1
        return self.channel.put(frame)

    def _status(self, message: str) -> None:
        logger.info("source %s: %s", self.stream, message)
        if self.on_status is not None:
            self.on_status(message)

    def _worker(self) -> None:
        try:
            self._run()
        except BaseException as e:
            self._error = e  # re-raised by stop(): its consumer reports it, once
            logger.info("source %s failed: %r", self.stream, e)
        finally:
            self._release()
            self.channel.close()

    def _release(self) -> None:
        """Free the device/file; called once on the worker thread's way out."""

    # -- consumer side -------------------------------------------------------------------------
    def start(self) -> Source:
        if self._started:
            return self
        self._started = True
        self._thread = threading.Thread(
            target=self._worker, name=f"source-{self.stream}", daemon=True
        )
        self._thread.start()
        return self

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame, or None at the end of the stream (also after an error; stop() raises it)."""
        return self.channel.get(timeout)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    @property
    def dropped(self) -> int:
        return self.channel.dropped

    @property
    def alive(self) -> bool:
        """Whether the source's worker thread (if it has one) is still running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker, wait for it, and re-raise its first exception (once)."""
        self._stop_event.set()
        self.channel.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("source %s did not stop within %.1f s", self.stream, timeout)
        self.raise_error()

    def raise_error(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            if isinstance(err, (SourceError, SourceLost)):
                raise err
            raise SourceError(f"source {self.stream} failed: {err!r}") from err

    def __enter__(self) -> Source:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def describe(self) -> str:
        return f"{type(self).__name__}({self.stream}, {self.drop_policy})"


def _open_capture(target: int | str, api: int | None = None) -> Any:
    import cv2

    cap = cv2.VideoCapture(target) if api is None else cv2.VideoCapture(target, api)
    return cap


class FileSource(Source):
    """A video file. ``pace="fast"``: every frame as fast as the consumer takes them, never a
    drop. ``pace="live"``: frames are released at their PTS (a replay that behaves like a camera),
    with the LATEST_ONLY policy so a slow consumer drops frames instead of falling behind.

    PTS come from ``CAP_PROP_POS_MSEC`` (the container's timestamps, so variable-frame-rate files
    keep their timing); if the container gives none, ``index / fps``.
    """

    def __init__(
        self,
        path: str | Path,
        pace: str = "fast",
        stream: str = "0",
        capacity: int | None = None,
        on_status: Callable[[str], None] | None = None,
        max_frames: int | None = None,
    ) -> None:
        if pace not in ("fast", "live"):
            raise ValueError(f"pace must be 'fast' or 'live', got {pace!r}")
        self.pace = pace
        self.drop_policy = LATEST_ONLY if pace == "live" else EVERY_FRAME
        self.live = pace == "live"
        super().__init__(stream=stream, capacity=capacity, on_status=on_status)
        self.path = Path(path)
        self.max_frames = max_frames
        if self.path.is_dir():
            raise SourceError(f"{self.path} is a directory; give a video file")
        if self.path.exists() and not self.path.is_file():
            raise SourceError(f"{self.path} is not a regular file (a device, FIFO or socket); "
                              "give a video file")
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} not found")
        import cv2

        from fesnet.model.third_party_logs import FFMPEG_OPEN_NOISE, native_stderr_filtered

        with native_stderr_filtered(FFMPEG_OPEN_NOISE):  # our error below says it better
            self._cap = _open_capture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(f"cannot open {self.path} as a video (unknown format or corrupt)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 < fps < 10000 else None
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if min(self.width, self.height) > 0:
            try:
                check_frame_size(self.width, self.height, str(self.path))
            except SourceError:
                self._cap.release()
                raise

    def _pts_s(self, index: int, last_pts_s: float | None) -> float:
        import cv2

        msec = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        pts = msec / 1000.0
        fallback = index / self.fps if self.fps else float(index) / 30.0
        if index > 0 and (pts <= 0.0 or (last_pts_s is not None and pts <= last_pts_s)):
            # No (or non-monotonic) container timestamps: keep the timeline strictly increasing.
            pts = max(fallback, (last_pts_s or 0.0) + 1e-3)
        return pts

    def _run(self) -> None:
        t0_ns: int | None = None
        last_pts: float | None = None
        index = 0
        while not self._stop_event.is_set():
            if self.max_frames is not None and index >= self.max_frames:
                break
            t_read = time.perf_counter()
            ok, image = self._cap.read()
            decode_s = time.perf_counter() - t_read
            if not ok:
                if index == 0:
                    raise SourceError(f"{self.path}: no frame could be decoded")
                if index == 1 and self.max_frames != 1:
                    raise SourceError(
                        f"{self.path} holds a single image, not a video: a still frame cannot "
                        "show an expression"
                    )
                break
            if index == 0:
                check_frame_size(image.shape[1], image.shape[0], str(self.path))
            pts = self._pts_s(index, last_pts)
            last_pts = pts
            if self.live:
                if t0_ns is None:
                    t0_ns = time.monotonic_ns() - int(pts * 1e9)
                delay_s = (t0_ns + pts * 1e9 - time.monotonic_ns()) / 1e9
                if delay_s > 0 and self._stop_event.wait(delay_s):
                    break
            if not self._emit(image, pts, decode_s=decode_s):
                break
            index += 1

    def _release(self) -> None:
        self._cap.release()

    def describe(self) -> str:
        return f"file {self.path} ({self.pace} pace, {self.drop_policy})"


class _CaptureSource(Source):
    """A live OpenCV capture (camera or network stream) with reconnect on read failure."""

    drop_policy = LATEST_ONLY
    live = True

    def __init__(
        self,
        stream: str,
        capacity: int | None,
        on_status: Callable[[str], None] | None,
        reconnect_attempts: int,
        reconnect_delay_s: float,
    ) -> None:
        super().__init__(stream=stream, capacity=capacity, on_status=on_status)
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay_s = reconnect_delay_s
        self.reconnects = 0
        self._cap = self._open()
        if self._cap is None:
            raise SourceError(self._open_error())

    def _open(self) -> Any:
        raise NotImplementedError

    def _open_error(self) -> str:
        raise NotImplementedError

    def _run(self) -> None:
        t0_ns = time.monotonic_ns()
        failures = 0
        while not self._stop_event.is_set():
            t_read = time.perf_counter()
            ok, image = self._cap.read()
            t_ns = time.monotonic_ns()
            decode_s = time.perf_counter() - t_read
            if ok and image is not None:
                if self.frames_read == 0:
                    check_frame_size(image.shape[1], image.shape[0], self.describe())
                failures = 0
                # Live sources carry no reliable PTS through OpenCV: the capture clock is the
                # source timeline (seconds since the source started).
                self._emit(image, (t_ns - t0_ns) / 1e9, t_ns, decode_s)
                continue
            failures += 1
            if failures > self.reconnect_attempts:
                raise SourceLost(
                    f"{self.describe()}: read failed and {self.reconnect_attempts} reconnect "
                    "attempts did not help"
                )
            self._status(f"read failed; reconnecting (attempt {failures})")
            self._cap.release()
            if self._stop_event.wait(self.reconnect_delay_s * failures):
                break
            cap = self._open()
            if cap is not None:
                self._cap = cap
                self.reconnects += 1
                self._status("reconnected")

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()


class WebcamSource(_CaptureSource):
    """A local camera (``webcam:N``): MJPG, driver buffer of 1 frame, newest frame only."""

    def __init__(
        self,
        device: int = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 60.0,
        stream: str | None = None,
        capacity: int | None = None,
        on_status: Callable[[str], None] | None = None,
        reconnect_attempts: int = 5,
        reconnect_delay_s: float = 0.5,
    ) -> None:
        self.device, self.width, self.height, self.requested_fps = device, width, height, fps
        super().__init__(
            stream if stream is not None else f"webcam{device}",
            capacity, on_status, reconnect_attempts, reconnect_delay_s,
        )

    def _open(self) -> Any:
        import cv2

        no_device = not Path(f"/dev/video{self.device}").exists()
        if no_device and sys.platform not in ("darwin", "win32"):
            return None
        cap = _open_capture(self.device)
        if not cap.isOpened():
            cap.release()
            return None
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.requested_fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else None
        return cap

    def _open_error(self) -> str:
        return f"camera {self.device} is not present or cannot be opened (webcam:{self.device})"

    def describe(self) -> str:
        return f"webcam:{self.device} ({self.drop_policy})"


class UrlSource(_CaptureSource):
    """An RTSP/HTTP stream through OpenCV's FFmpeg backend; newest frame only."""

    def __init__(
        self,
        url: str,
        stream: str | None = None,
        capacity: int | None = None,
        on_status: Callable[[str], None] | None = None,
        reconnect_attempts: int = 5,
        reconnect_delay_s: float = 1.0,
        timeout_s: float = STREAM_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        super().__init__(
            stream or "url", capacity, on_status, reconnect_attempts, reconnect_delay_s
        )

    def _open(self) -> Any:
        import cv2

        ms = int(self.timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = open_interruptibly(lambda: cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params))
        if not cap.isOpened():
            cap.release()
            return None
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _open_error(self) -> str:
        return (
            f"cannot open stream {self.url} (no answer within {self.timeout_s:g} s, or not a video)"
        )

    def describe(self) -> str:
        return f"{self.url} ({self.drop_policy})"


_WEBCAM = re.compile(r"^(?:webcam|camera|cam):(\d+)$")


def open_source(
    spec: str, pace: str = "fast", stream: str | None = None, capacity: int | None = None
) -> Source:
    """``path/to/video.mp4`` | ``webcam:N`` | ``rtsp://...`` / ``http(s)://...`` -> a Source.

    ``pace`` applies to files only (cameras and streams are live by nature).
    Raises SourceError with a message a user can act on.
    """
    spec = spec.strip()
    if not spec:
        raise SourceError("empty source")
    m = _WEBCAM.match(spec)
    if m:
        return WebcamSource(int(m.group(1)), stream=stream, capacity=capacity)
    if re.match(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", spec):
        return UrlSource(spec, stream=stream, capacity=capacity)
    if spec.isdigit():
        raise SourceError(f"source {spec!r}: did you mean webcam:{spec}?")
    return FileSource(spec, pace=pace, stream=stream or "0", capacity=capacity)
