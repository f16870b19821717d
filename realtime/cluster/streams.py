"""Several sources in one ``fesnet-spot run``: in-process, or one Ray actor per stream.

In this process (no ``--cluster``), every source is a stream of its own over one shared engine
(realtime/session.py), as the viewers' hub runs them. With ``--cluster`` every file or RTSP
source gets a :class:`StreamWorker` actor that owns the stream's whole ingest (source,
face tracker, ring, merger: the Pipeline) and calls the model tier through a
:class:`~fesnet.realtime.cluster.backend.RayBackend`. The driver polls the actors for events and
writes them to the same sinks as a single-source run.

A stream whose actor dies (its node lost) ends with its open intervals closed as
``interrupted``, a ``status`` event and one error line naming it, and its summary as last
polled; the others carry on. A stream that stops answering polls for ``stall_s`` is killed and
ends the same way: nothing waits forever.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fesnet.realtime.reporting import StreamResult
from fesnet.realtime.types import SpotEvent

from .config import ClusterConfig, RetryPolicy

logger = logging.getLogger(__name__)


class StreamWorker:
    """One stream's ingest inside a Ray actor (wrapped with ``ray.remote`` by :func:`spawn`):
    the source, and a Spotter whose model is the Ray model tier, run by a Pipeline, exactly as
    ``fesnet-spot run`` runs one stream in-process. ``serving`` ``tier``: the stream's features
    live on the replica it is pinned to and its crops go there once (realtime/tier_engine.py,
    ``post``: the post-processing of a backend that wraps the network, applied here);
    ``engine``: its features stay here and each window carries its slots (wire.py)."""

    def __init__(
        self,
        spec: str,
        stream: str,
        handle: Any,
        described: dict[str, Any],
        merger: Any,
        stride_frames: int,
        pace: str,
        retry: RetryPolicy,
        serving: str = "engine",
        post: Any = None,
    ) -> None:
        from fesnet.realtime.session import StreamModel, open_stream
        from fesnet.realtime.sources import open_source
        from fesnet.realtime.tier_engine import TierEngine

        from .backend import RayBackend

        self.backend = RayBackend(handle, described, retry)
        self._events: list[SpotEvent] = []
        self._cond = threading.Condition()
        source = open_source(spec, pace=pace, stream=stream)
        if serving == "tier":
            engine = TierEngine(self.backend, self.backend.window_frames, self.backend.geometry,
                                post=post)
            model = StreamModel(engine, merger, stride_frames)
        else:
            model = StreamModel.over(self.backend, merger, stride_frames)
        self.pipe = open_stream(model, source, [self._sink])

    def _sink(self, event: SpotEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def start(self) -> dict[str, Any]:
        import os

        import ray

        self.pipe.start()
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def poll(self, wait_s: float = 0.5) -> dict[str, Any]:
        """Events since the last poll (waits up to ``wait_s`` for one), and whether it ended."""
        with self._cond:
            if not self._events and self.pipe.running:
                self._cond.wait(wait_s)
            events, self._events = self._events, []
        done = not self.pipe.running
        out: dict[str, Any] = {"events": events, "done": done, "error": None}
        if done:
            try:
                self.pipe.join(timeout=5.0)
            except Exception as e:
                out["error"] = str(e)
            with self._cond:
                out["events"] += self._events
                self._events = []
        # Every poll: if the actor is lost later, the driver still has the stream's summary.
        out["summary"] = self.pipe.summary()
        out["wire"] = self.backend.stats.snapshot()
        return out

    def request_stop(self) -> None:
        self.pipe.request_stop()


def spawn(
    cfg: ClusterConfig,
    tier: Any,
    spec: str,
    stream: str,
    stride_frames: int,
    pace: str,
    merger: Any,
    serving: str = "engine",
    post: Any = None,
) -> Any:
    """A StreamWorker actor for ``spec`` (``serving``, ``post``: :class:`StreamWorker`). Not
    restarted: a restarted actor would spot the source again from its start and repeat events,
    so a dead stream ends with an error."""
    import ray

    resources = {cfg.stream_resource: 1} if cfg.stream_resource else None
    actor_cls = ray.remote(num_cpus=cfg.stream_cpus, max_restarts=0, max_concurrency=4,
                           resources=resources)(StreamWorker)
    return actor_cls.remote(spec, stream, tier.handle, tier.described, merger, stride_frames,
                            pace, cfg.retry, serving, post)


class StreamLost(RuntimeError):
    """A stream on the cluster ended without its actor's say: the actor died or stalled."""


class OpenIntervals:
    """The expressions each stream has opened and not closed yet, as the driver saw its events
    (a sink). When a stream's actor is lost, its open intervals are closed here as
    ``interrupted``: at the onset's apex, the last moment of them the driver knows."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int | None], SpotEvent] = {}

    def __call__(self, event: SpotEvent) -> None:
        if event.type != "expression":
            return
        key = (event.stream, event.event_id)
        if event.state == "onset":
            self._open[key] = event
        else:
            self._open.pop(key, None)

    def close(self, stream: str) -> list[SpotEvent]:
        closed = []
        for key in [k for k in self._open if k[0] == stream]:
            e = self._open.pop(key)
            closed.append(dataclasses.replace(e, state="interrupted", offset_s=e.apex_s,
                                              offset_frame=e.apex_frame, latency_ms=None,
                                              t_trigger_ns=None))
        return closed


def drive_actors(
    actors: dict[str, Any],
    emit: Callable[[SpotEvent], None],
    stop: threading.Event,
    stall_s: float = 120.0,
    poll_s: float = 0.5,
) -> list[StreamResult]:
    """Poll every stream actor until each has ended; returns each stream's result, in the
    order of ``actors``: its newest summary and what crossed the wire, and its error (the
    stream failed, or its actor died or stalled: then its open intervals are closed as
    ``interrupted`` and a ``status`` event says why)."""
    import ray

    results: dict[str, StreamResult] = {}
    latest: dict[str, dict[str, Any]] = {}
    last_t: dict[str, float] = {}
    opened = OpenIntervals()

    def lost(stream: str, message: str) -> None:
        """The stream ended without its actor: one line of error, its summary as last seen."""
        for e in opened.close(stream):
            emit(e)
        emit(_status(stream, last_t.get(stream, 0.0), message))
        summary = latest.get(stream, {}).get("summary")
        if summary is not None:
            summary["interrupted"] = True
        results[stream] = StreamResult(stream, summary, StreamLost(f"stream {stream}: {message}"),
                                       latest.get(stream, {}).get("wire", {}))

    for stream, actor in actors.items():
        try:
            ray.get(actor.start.remote(), timeout=stall_s)
        except Exception as e:  # SourceError from the actor's __init__ arrives here
            lost(stream, f"could not start: {_root(e)}")
    pending = {actors[s].poll.remote(poll_s): s for s in actors if s not in results}
    asked = {s: time.monotonic() for s in pending.values()}
    stopping = False
    while pending:
        if stop.is_set() and not stopping:
            stopping = True
            for s in pending.values():
                _quietly(lambda s=s: actors[s].request_stop.remote())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
        now = time.monotonic()
        for ref in ready:
            stream = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as e:  # the actor (or its node) is gone
                lost(stream, f"its actor died ({type(e).__name__}); the stream ended")
                continue
            for e in out["events"]:
                last_t[stream] = e.t_s
                opened(e)
                emit(e)
            latest[stream] = out
            if out["done"]:
                error = StreamLost(f"stream {stream}: {out['error']}") if out["error"] else None
                if error is not None:
                    emit(_status(stream, last_t.get(stream, 0.0), f"stream failed: {out['error']}"))
                results[stream] = StreamResult(stream, out["summary"], error, out["wire"])
            else:
                pending[actors[stream].poll.remote(poll_s)] = stream
                asked[stream] = now
        for ref, stream in list(pending.items()):
            if now - asked[stream] > stall_s:
                pending.pop(ref)
                _quietly(lambda s=stream: ray.kill(actors[s], no_restart=True))
                lost(stream, f"its actor stopped answering for {stall_s:.0f} s and was killed")
    return [results[s] for s in actors]


def _quietly(call: Callable[[], Any]) -> None:
    """A call to an actor that may be gone already: its failure is the poll's to report."""
    try:
        call()
    except Exception as e:
        logger.debug("call to a stream actor failed: %r", e)


def _root(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e.__cause__
    return f"{type(cause or e).__name__}: {cause or e}"


def _status(stream: str, t_s: float, message: str) -> SpotEvent:
    return SpotEvent(type="status", stream=stream, t_s=t_s, message=message)


def stream_names(specs: Sequence[str]) -> list[str]:
    """``s0, s1, ...``: short, unique, and the same in-process and on the cluster."""
    return [f"s{i}" for i in range(len(specs))]
