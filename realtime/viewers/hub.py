"""Live spotting sessions for the viewers: one shared engine, one spotter state per camera.

A :class:`SpotHub` owns the model (one :class:`~fesnet.realtime.engine.Engine` over one backend)
and hands out :class:`LiveSession` objects, one per camera / peer / replay. Each session is its
own :class:`~fesnet.realtime.pipeline.Pipeline` (own face tracker, ring, merger and worker
thread), so streams never mix state; all of them call the same engine, which is what lets several
cameras share one model (and later one batching inference server).

Threads: a session's events are produced on its pipeline thread. Listeners registered with
:meth:`LiveSession.add_listener` are called there and must not block; an asyncio viewer hands each
event to its loop with ``loop.call_soon_threadsafe`` (see :meth:`LiveSession.listen_async`).
The hub never runs the model on an event loop.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fesnet.realtime.engine import Engine
from fesnet.realtime.events import event_to_json
from fesnet.realtime.pipeline import Pipeline, Snapshot
from fesnet.realtime.sources import FileSource, PushSource, Source
from fesnet.realtime.types import SpotEvent

logger = logging.getLogger(__name__)

Listener = Callable[[SpotEvent], None]


class HubFull(RuntimeError):
    """The hub already runs its maximum number of sessions."""


@dataclass(frozen=True)
class HubConfig:
    """How sessions are run. ``max_sessions`` bounds concurrent cameras (each costs a face
    tracker and a thread); ``max_events_kept`` bounds each session's downloadable event log."""

    stride_frames: int = 8
    max_sessions: int = 4
    max_events_kept: int = 100_000
    merger: dict[str, Any] = field(default_factory=dict)
    calibrate_s: float = 0.0
    """> 0: every camera session (push source) starts with a neutral-baseline phase of this many
    seconds of face (calibration/baseline.py); replays of files do not calibrate."""
    calibration_timeout_s: float = 20.0


def build_engine(
    checkpoint: str | Path | None = None, backend: str = "onnx", threads: int | None = None
) -> tuple[Engine, dict[str, Any]]:
    """Load a checkpoint (the shipped one by default) into one backend -> (engine, merger
    settings shipped with the weights). ONNX falls back to torch when it cannot be built."""
    from fesnet.model import checkpoint as ckpt_mod
    from fesnet.model.backends import make_backend

    ckpt = ckpt_mod.load(checkpoint)
    opts: dict[str, Any] = {} if threads is None else {"threads": threads}
    try:
        be = make_backend(backend, ckpt, **opts)
    except Exception as e:  # a missing runtime raises import/runtime errors of many kinds
        if backend == "torch":
            raise
        logger.warning("backend %s unavailable (%s); using torch", backend, e)
        be = make_backend("torch", ckpt, **opts)
    return Engine(be, ckpt.config.window_frames), ckpt.merger


class LiveSession:
    """One camera (a WebRTC peer, a replayed file): a pipeline plus its event log and listeners."""

    def __init__(
        self,
        hub: SpotHub,
        source: Source,
        session_id: str,
        aligner: Any = None,
    ) -> None:
        self.hub = hub
        self.id = session_id
        self.source = source
        self.created_s = time.monotonic()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=hub.config.max_events_kept
        )
        self.frames_in = 0
        self._in_times: collections.deque[float] = collections.deque(maxlen=120)
        self.error: BaseException | None = None
        self.pipeline = Pipeline(
            source,
            hub.engine,
            hub.merger_cfg,
            hub.config.stride_frames,
            sinks=[self._on_event],
            aligner=aligner,
        )
        self.calibration: Any = None  # the CalibratingSpotter of a calibrating session
        if hub.config.calibrate_s > 0 and isinstance(source, PushSource):
            from fesnet.calibration.baseline import BaselineConfig, attach_calibration
            from fesnet.calibration.profile import ThresholdRule

            cfg = hub.config
            rule = hub.neutral_rule or ThresholdRule()  # relative if the checkpoint allows
            phase = BaselineConfig(cfg.calibrate_s, cfg.calibration_timeout_s, rule)
            self.calibration = attach_calibration(self.pipeline, phase, session_id)
        self._closed = False

    def skip_calibration(self) -> bool:
        """Skip a running neutral-baseline phase (a viewer's button); False if none runs."""
        if self.calibration is None or self.calibration.phase != "calibrating":
            return False
        self.calibration.skip()
        return True

    # -- producer side (PushSource sessions) --------------------------------------------------
    def push(self, image_bgr: Any, pts_s: float, t_capture_ns: int | None = None) -> bool:
        """Offer one frame (latest-only: an unread frame is replaced and counted as dropped)."""
        if not isinstance(self.source, PushSource):
            raise TypeError("push() needs a session over a PushSource")
        now = time.monotonic()
        with self._lock:
            self.frames_in += 1
            self._in_times.append(now)
        return self.source.push(image_bgr, pts_s, t_capture_ns)

    @property
    def input_fps(self) -> float:
        """Frames per second arriving from the camera (before the latest-only slot)."""
        with self._lock:
            t = list(self._in_times)
        if len(t) < 2 or time.monotonic() - t[-1] > 2.0:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    # -- events --------------------------------------------------------------------------------
    def _on_event(self, event: SpotEvent) -> None:
        d = event.to_dict()
        with self._lock:
            self._events.append(d)
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

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def events_jsonl(self) -> str:
        return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self.events())

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LiveSession:
        self.pipeline.start()
        return self

    @property
    def running(self) -> bool:
        return self.pipeline.running

    def close(self, timeout: float = 10.0) -> None:
        """End the stream (a push source ends like a file: open intervals are flushed) and wait
        for the worker. Idempotent; errors are logged and kept in ``self.error``."""
        if self._closed:
            return
        self._closed = True
        if isinstance(self.source, PushSource):
            self.source.close()
        else:
            self.pipeline.request_stop()
        try:
            if not self.pipeline.join(timeout):
                self.pipeline.request_stop()
                self.pipeline.join(timeout)
        except Exception as e:
            self.error = e
            logger.warning("session %s ended with an error: %r", self.id, e)
        finally:
            self.hub._forget(self)

    def snapshot(self) -> Snapshot:
        return self.pipeline.snapshot()

    def stats(self) -> dict[str, Any]:
        """Numbers a viewer shows: frame rates, drops, latency, counts (JSON-ready)."""
        snap = self.snapshot()
        lat = self.pipeline.stats.values_ms("event_latency")
        return {
            "type": "stats",
            "stream": self.id,
            "state": snap.state,
            "frames_in": self.frames_in,
            "input_fps": round(self.input_fps, 2),
            "frames": snap.frames,
            "fps": round(snap.fps, 2),
            "dropped": snap.dropped,
            "windows_skipped": self.pipeline.spotter.counters["windows_skipped"],
            "score_latency_p50_ms": (
                None if snap.latency_p50_ms is None else round(snap.latency_p50_ms, 1)
            ),
            "event_latency_p50_ms": round(float(sorted(lat)[len(lat) // 2]), 1)
            if len(lat)
            else None,
            "events": self.pipeline.events_emitted,
            "running": snap.running,
            "calibration": (
                None if self.calibration is None else self.calibration.calibration_state()
            ),
        }


class SpotHub:
    """One engine shared by every session; creates, tracks and limits sessions. Thread-safe."""

    def __init__(
        self,
        engine: Engine,
        config: HubConfig | None = None,
        merger_defaults: dict[str, Any] | None = None,
        neutral_rule: Any = None,
    ) -> None:
        from fesnet.model.merger import MergerConfig

        self.engine = engine
        self.neutral_rule = neutral_rule  # the checkpoint's relative ThresholdRule, if any
        self.config = config or HubConfig()
        settings = {**(merger_defaults or {}), **self.config.merger}
        settings.setdefault("window_frames", engine.window_frames)
        self.merger_cfg = MergerConfig(**settings)
        self._sessions: dict[str, LiveSession] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path | None = None,
        backend: str = "onnx",
        config: HubConfig | None = None,
    ) -> SpotHub:
        from fesnet.calibration.profile import checkpoint_rule
        from fesnet.model import checkpoint as ckpt_mod

        engine, merger = build_engine(checkpoint, backend)
        meta = ckpt_mod.read_meta(checkpoint or ckpt_mod.DEFAULT_CHECKPOINT)
        return cls(engine, config, merger, checkpoint_rule(meta))

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def _register(self, make: Callable[[str], LiveSession], prefix: str) -> LiveSession:
        with self._lock:
            if len(self._sessions) >= self.config.max_sessions:
                raise HubFull(f"{len(self._sessions)} sessions already running (the limit)")
            sid = self._new_id(prefix)
            session = make(sid)
            self._sessions[sid] = session
        return session

    def open_push(self, prefix: str = "peer", aligner: Any = None) -> LiveSession:
        """A session fed frame by frame (a WebRTC track), latest-only; started."""

        def make(sid: str) -> LiveSession:
            return LiveSession(self, PushSource(stream=sid), sid, aligner)

        return self._register(make, prefix).start()

    def open_file(
        self, path: str | Path, pace: str = "live", prefix: str = "file", aligner: Any = None
    ) -> LiveSession:
        """A session over a video file (``pace="live"`` replays it like a camera); started."""

        def make(sid: str) -> LiveSession:
            return LiveSession(self, FileSource(path, pace=pace, stream=sid), sid, aligner)

        return self._register(make, prefix).start()

    def _forget(self, session: LiveSession) -> None:
        with self._lock:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]

    def sessions(self) -> list[LiveSession]:
        with self._lock:
            return list(self._sessions.values())

    def close_all(self, timeout: float = 10.0) -> None:
        for s in self.sessions():
            s.close(timeout)


def event_json(event: SpotEvent) -> str:
    """The spotter's event JSON, as sent on a data channel (schema: docs/EVENTS.md)."""
    return event_to_json(event)
