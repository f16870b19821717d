"""Live spotting sessions for the viewers: one shared engine, one spotter per camera.

A :class:`SpotHub` owns the model (a :class:`~fesnet.realtime.session.StreamModel`: one engine
over one backend, with the merger config and stride the runtime loader gave it) and hands out
:class:`LiveSession` objects, one per camera / peer / replay. Each session is a stream opened by
``fesnet.realtime.session.open_stream`` (own face tracker, ring, merger and threads), so streams
never mix state; all of them call the same engine, which is what lets several cameras share one
model (and one batching model tier on Ray).

A session keeps its events as :class:`~fesnet.realtime.types.SpotEvent` objects (bounded): the
viewers render them, and the export writes them with the same JSONL writer as a run.

Camera sessions may start with a phase (``HubConfig.camera_phase``: the entry point passes the
neutral-baseline calibration of calibration/baseline.py); the hub only sees the
:class:`~fesnet.realtime.spotter.Phase` protocol, so viewers import nothing from calibration/.

Threads: a session's events are produced on its pipeline thread. Listeners registered with
:meth:`LiveSession.add_listener` are called there and must not block; an asyncio viewer hands each
event to its loop with ``loop.call_soon_threadsafe`` (see :meth:`LiveSession.listen_async`).
The hub never runs the model on an event loop.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fesnet.model.runtime import Runtime
from fesnet.realtime.observers import FrameView, LiveView, ViewState
from fesnet.realtime.push import PushSource
from fesnet.realtime.session import StreamModel, open_stream
from fesnet.realtime.sinks import write_events
from fesnet.realtime.sources import FileSource, Source
from fesnet.realtime.spotter import Phase, Spotter, SpotterConfig
from fesnet.realtime.stats import RateMeter
from fesnet.realtime.tracking import Aligner, FaceTracker
from fesnet.realtime.types import SpotEvent

logger = logging.getLogger(__name__)

Listener = Callable[[SpotEvent], None]
PhaseFactory = Callable[[Spotter, str], Phase]
"""(the session's spotter, session id) -> the phase a camera session starts with."""


class HubFull(RuntimeError):
    """The hub already runs its maximum number of sessions."""


@dataclass(frozen=True)
class HubConfig:
    """How sessions are run. ``max_sessions`` bounds concurrent cameras (each costs a face
    tracker and two threads); ``max_events_kept`` bounds each session's downloadable event log."""

    max_sessions: int = 4
    max_events_kept: int = 100_000
    spotter: SpotterConfig = field(default_factory=SpotterConfig)
    camera_phase: PhaseFactory | None = None
    """Every camera session (push source) starts with the phase this makes; replays of files
    never do."""


SESSION_NUMBERS = ("frames", "fps", "dropped", "windows_skipped", "score_latency_p50_ms",
                   "event_latency_p50_ms", "events", "running")
"""What a session's stats take from its stream's live status."""


class LiveSession:
    """One camera (a WebRTC peer, a replayed file): a spotter, its pipeline, its event log and
    listeners, and what a viewer shows of it."""

    def __init__(
        self,
        hub: SpotHub,
        source: Source,
        session_id: str,
        aligner: Aligner | None = None,
    ) -> None:
        self.hub = hub
        self.id = session_id
        self.source = source
        self.created_s = time.monotonic()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._events: collections.deque[SpotEvent] = collections.deque(
            maxlen=hub.config.max_events_kept
        )
        self.input_rate = RateMeter()
        self.error: BaseException | None = None
        self.live_view = LiveView()
        camera_phase = hub.config.camera_phase
        phase = None
        if camera_phase is not None and isinstance(source, PushSource):

            def phase(spotter: Spotter) -> Phase:
                return camera_phase(spotter, session_id)

        self.run = open_stream(
            hub.model, source, [self._on_event], config=hub.config.spotter,
            tracker=FaceTracker(aligner) if aligner is not None else None,
            observers=[self.live_view], phase=phase,
        )
        self.phase: Phase | None = self.run.phase
        self._closed = False
        self._close_lock = threading.Lock()

    def skip_phase(self) -> bool:
        """Skip a running phase (the page's "Skip calibration" button); False if none runs."""
        if self.phase is None or not self.phase.running:
            return False
        self.phase.skip()
        return True

    # -- producer side (PushSource sessions) --------------------------------------------------
    def _push_source(self) -> PushSource:
        if not isinstance(self.source, PushSource):
            raise TypeError("pushing frames needs a session over a PushSource")
        self.input_rate.tick(time.monotonic())
        return self.source

    def push(self, image_bgr: Any, pts_s: float, t_capture_ns: int | None = None) -> bool:
        """Offer one frame (latest-only: an unread frame is replaced and counted as dropped)."""
        return self._push_source().push(image_bgr, pts_s, t_capture_ns)

    def push_undecoded(
        self, decode: Callable[[], np.ndarray], pts_s: float, t_capture_ns: int | None = None
    ) -> bool:
        """Offer one frame still to be converted to an image (``decode()``, run by the
        session's align thread, and only for a frame that is not dropped)."""
        return self._push_source().push_undecoded(decode, pts_s, t_capture_ns)

    # -- events --------------------------------------------------------------------------------
    def _on_event(self, event: SpotEvent) -> None:
        with self._lock:
            self._events.append(event)
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(event)
            except Exception:
                logger.exception("session %s: event listener failed", self.id)

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def listen_async(self, loop: asyncio.AbstractEventLoop, fn: Callable[[SpotEvent], Any]) -> None:
        """Call ``fn(event)`` on ``loop`` for every event (safe from the pipeline thread)."""

        def hop(event: SpotEvent) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(fn, event)

        self.add_listener(hop)

    def events(self) -> list[SpotEvent]:
        """The events kept so far (the newest ``max_events_kept``), oldest first."""
        with self._lock:
            return list(self._events)

    def last_event(self) -> SpotEvent | None:
        with self._lock:
            return self._events[-1] if self._events else None

    def export_events(self, path: str | Path) -> int:
        """Write the kept events to a new JSONL file: the lines a run's ``--events`` file has,
        by the same writer (docs/EVENTS.md). Returns how many."""
        return write_events(path, self.events())

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LiveSession:
        self.run.start()
        return self

    @property
    def running(self) -> bool:
        return self.run.running

    @property
    def ended(self) -> bool:
        """The stream ended by itself (a replay reached its end, a worker failed): the session
        no longer uses its slot, although nobody has closed it yet."""
        return self.run.ended

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = 10.0) -> None:
        """End the stream (a push source ends like a file: open intervals are flushed) and wait
        for the worker, then give the hub its slot back. Idempotent and thread-safe: the first
        call closes, later ones return at once; errors are logged and kept in ``self.error``."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if isinstance(self.source, PushSource):
            self.source.close()
        else:
            self.run.request_stop()
        try:
            if not self.run.join(timeout):
                self.run.request_stop()
                self.run.join(timeout)
        except Exception as e:
            self.error = e
            logger.warning("session %s ended with an error: %r", self.id, e)
        finally:
            self.hub.release(self)

    def view(self) -> ViewState:
        """What a viewer draws: face state, newest crop, recent scores, thresholds in force."""
        return self.live_view.view()

    def frame(self) -> FrameView | None:
        """The newest frame the spotter consumed, with the tracked face's box."""
        return self.live_view.frame()

    def stats(self) -> dict[str, Any]:
        """Numbers a viewer shows: frame rates, drops, latency, counts (JSON-ready)."""
        view = self.view()
        run = self.run.status()
        return {
            "type": "stats",
            "stream": self.id,
            "state": view.state,
            "frames_in": self.input_rate.count,
            "input_fps": round(self.input_rate.rate(time.monotonic()), 2),
            **{k: run[k] for k in SESSION_NUMBERS},
            "on_threshold": view.on_threshold,
            "off_threshold": view.off_threshold,
            "calibration": None if self.phase is None else self.phase.state(),
        }


class SpotHub:
    """One engine shared by every session; creates, tracks and limits sessions. Thread-safe."""

    def __init__(self, model: StreamModel, config: HubConfig | None = None) -> None:
        self.model = model
        self.config = config or HubConfig()
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()

    @classmethod
    def from_runtime(cls, runtime: Runtime, config: HubConfig | None = None) -> SpotHub:
        """A hub over a model loaded by ``fesnet.model.runtime.load_runtime`` (on the model tier,
        when the runtime serves its streams there, with a ring block for every session)."""
        config = config or HubConfig()
        return cls(StreamModel.of(runtime, max_streams=config.max_sessions), config)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _register(self, make: Callable[[str], LiveSession], prefix: str) -> LiveSession:
        # A session that ended by itself holds no worker any more: close it (a quick join) so
        # the count below is the sessions really alive, whatever its owner does later.
        for s in self.sessions():
            if s.ended:
                s.close()
        with self._lock:
            if len(self._sessions) >= self.config.max_sessions:
                raise HubFull(f"{len(self._sessions)} sessions already running (the limit)")
            sid = self._new_id(prefix)
            session = make(sid)
            self._sessions[sid] = session
        return session

    @staticmethod
    def _started(session: LiveSession) -> LiveSession:
        try:
            return session.start()
        except BaseException:
            session.close()
            raise

    def open_push(self, prefix: str = "peer", aligner: Any = None) -> LiveSession:
        """A session fed frame by frame (a WebRTC track), latest-only; started."""

        def make(sid: str) -> LiveSession:
            return LiveSession(self, PushSource(stream=sid), sid, aligner)

        return self._started(self._register(make, prefix))

    def open_file(
        self, path: str | Path, pace: str = "live", prefix: str = "file", aligner: Any = None
    ) -> LiveSession:
        """A session over a video file (``pace="live"`` replays it like a camera); started."""

        def make(sid: str) -> LiveSession:
            return LiveSession(self, FileSource(path, pace=pace, stream=sid), sid, aligner)

        return self._started(self._register(make, prefix))

    def release(self, session: LiveSession) -> None:
        """A closed session gives its place back (LiveSession.close calls this)."""
        with self._lock:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]

    def sessions(self) -> list[LiveSession]:
        with self._lock:
            return list(self._sessions.values())

    def close_all(self, timeout: float = 10.0) -> None:
        for s in self.sessions():
            s.close(timeout)

