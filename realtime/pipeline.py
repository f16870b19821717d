"""The threaded live driver of one stream: :class:`Pipeline` runs a given
:class:`~fesnet.realtime.spotter.Spotter` on a source.

    source thread (decode)  ->  source channel (the source's drop policy)  ->
    align thread:  Spotter.track  ->  hand-over channel (EVERY_FRAME, 2 frames: in order; full =
                   backpressure on the source, so a live source drops at its latest-only slot)  ->
    infer thread:  Spotter.consume  ->  events stamped with their latency  ->  sinks

Alignment (mediapipe) and the encoder each cost ~5 ms per frame on one core here; on their own
threads they overlap, so a stream is limited by the slower stage rather than by their sum.

Lifecycle: ``start()``, then ``join()`` (end of stream) or ``stop()`` (now: an open interval is
closed as "interrupted"). Both channels end on every exit path (close at the end, cancel on a
stop or a failure), so no thread waits forever; a failing thread's first exception is re-raised
by ``join()`` as :class:`PipelineError`, after the events so far were delivered. A failing sink
never stops the stream (:class:`~fesnet.realtime.sinks.Fanout`): its errors are counted and
the first one logged.

The pipeline drives the spotter through its public surface only (``open``/``close`` on the
align thread, ``track``, ``consume``, ``finish``/``interrupt``, ``emitted``, ``status_event``,
``summary``). Pipelines are put together in one place: realtime/session.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from .channel import EVERY_FRAME, FrameChannel
from .sinks import Fanout, Sink
from .sources import Source
from .spotter import Spotter
from .stats import RateMeter
from .tracking import TrackResult
from .types import Frame, SpotEvent

logger = logging.getLogger(__name__)

HANDOVER_FRAMES = 2  # tracked frames waiting for the infer thread


class PipelineError(RuntimeError):
    """The align or infer thread failed; the original exception is the cause."""


class Pipeline:
    """Source thread + align thread + infer thread for one stream; events go to ``sinks``."""

    def __init__(self, source: Source, spotter: Spotter, sinks: Sequence[Sink] = ()) -> None:
        self.source = source
        self.spotter = spotter
        self.stream = spotter.stream
        self._sinks = Fanout(sinks, f"stream {self.stream}")
        self.frame_rate = RateMeter()
        self._handover: FrameChannel[tuple[Frame, TrackResult]] = FrameChannel(
            EVERY_FRAME, HANDOVER_FRAMES
        )
        self._stop = threading.Event()
        self._abort = threading.Event()  # one of the two threads failed: both end, no finish()
        self._infer_thread: threading.Thread | None = None
        self._align_thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._done = threading.Event()
        self._ready = threading.Event()
        self.events_emitted = 0
        self.interrupted = False
        self.t_start: float | None = None
        self.t_end: float | None = None
        self._joined = False
        source.on_status = self._source_status

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._infer_thread is not None

    def start(self) -> Pipeline:
        if self.started:
            return self
        self.t_start = time.monotonic()
        self._align_thread = threading.Thread(
            target=self._align_work, name=f"align-{self.stream}", daemon=True
        )
        self._infer_thread = threading.Thread(
            target=self._infer_work, name=f"spot-{self.stream}", daemon=True
        )
        self._align_thread.start()
        self._infer_thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the tracker's aligner is loaded and the source reads frames (mediapipe
        takes a moment to load; a live source drops frames meanwhile)."""
        return self._ready.wait(timeout) or self._done.is_set()

    def request_stop(self) -> None:
        """Stop after the current frame (safe from a signal handler: sets a flag and wakes the
        threads; nothing here waits)."""
        self._stop.set()
        self.source.channel.cancel()
        self._handover.cancel()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop now: open intervals are closed as "interrupted"; re-raises a thread's error."""
        self.request_stop()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end of the stream (or a stop). Re-raises the source's or a thread's
        first exception. Returns False if the pipeline is still running after ``timeout``."""
        if self._infer_thread is None:
            raise RuntimeError("pipeline not started")
        if not self._done.wait(timeout):
            return False
        self._infer_thread.join()
        if self._joined:
            return True
        self._joined = True
        try:
            self.source.stop()
        finally:
            err, self._error = self._error, None
            if err is not None:
                raise PipelineError(f"stream {self.stream}: {err!r}") from err
        return True

    @property
    def running(self) -> bool:
        return self.started and not self._done.is_set()

    # -- threads -------------------------------------------------------------------------------
    def _align_work(self) -> None:
        """Align thread: source frames -> (frame, tracking result) into the hand-over channel."""
        try:
            self.spotter.open()
            # A live source starts only now: frames are not dropped while mediapipe loads.
            self.source.start()
            self._ready.set()
            while not (self._stop.is_set() or self._abort.is_set()):
                frame = self.source.read()
                if frame is None:
                    break
                # Blocks while the infer thread is behind (backpressure); False once cancelled.
                if not self._handover.put((frame, self.spotter.track(frame))):
                    break
        except BaseException as e:
            self._fail(e)
        finally:
            self.spotter.close()
            self._handover.close()  # end of stream (after the frames already handed over)

    def _infer_work(self) -> None:
        """Infer thread: tracked frames -> spotting -> events to the sinks."""
        try:
            while (item := self._handover.get()) is not None:
                frame, tracked = item
                self._emit(self.spotter.consume(frame, tracked))
                self.frame_rate.tick(time.monotonic())
            if self._abort.is_set():  # a thread failed: no finish(), the error says why
                return
            if self._stop.is_set():
                self.interrupted = True
                self._emit(self.spotter.interrupt())
            else:
                self._emit(self.spotter.finish())
        except BaseException as e:
            self._fail(e)
        finally:
            assert self._align_thread is not None
            self._align_thread.join()
            self.t_end = time.monotonic()
            self._done.set()

    def _fail(self, e: BaseException) -> None:
        with self._error_lock:
            first = self._error is None
            if first:
                self._error = e
        if first:
            logger.error("stream %s: worker failed: %r", self.stream, e)
        self._abort.set()
        self.source.channel.cancel()  # release a producer waiting for room
        self._handover.cancel()

    # -- events --------------------------------------------------------------------------------
    def _emit(self, events: Sequence[SpotEvent]) -> None:
        """The one place events leave a stream: latency stamped, then every sink."""
        if not events:
            return
        t0 = time.perf_counter()
        self.spotter.emitted(events)
        for e in events:
            self.events_emitted += 1
            self._sinks(e)
        self.spotter.time_stage("emit", time.perf_counter() - t0)

    def _source_status(self, message: str) -> None:
        # Called on the source thread: sinks are called from there too, which the sink contract
        # (non-blocking, thread-safe) allows.
        self._emit([self.spotter.status_event(f"source: {message}")])

    # -- read side -----------------------------------------------------------------------------
    @property
    def sink_errors(self) -> int:
        return self._sinks.errors

    def summary(self) -> dict[str, Any]:
        """Counters and per-stage timings of the run so far (the benchmark reads this)."""
        spotted = self.spotter.summary()
        wall = ((self.t_end or time.monotonic()) - self.t_start) if self.t_start else 0.0
        return {
            "stream": self.stream,
            "source": self.source.describe(),
            "frames_read": self.source.frames_read,
            "dropped": self.source.dropped,
            **spotted,
            "events": self.events_emitted,
            "sink_errors": self.sink_errors,
            "interrupted": self.interrupted,
            "wall_s": wall,
            "fps": spotted["frames"] / wall if wall > 0 else 0.0,
        }
