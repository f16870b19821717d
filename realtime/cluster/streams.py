"""Several sources in one ``fesnet-spot run``: in-process, or one Ray actor per stream.

In-process (no ``--cluster``), every source gets its own :class:`~fesnet.realtime.pipeline.
Pipeline` over one shared backend, as the viewers' hub does. With ``--cluster`` every file or
RTSP source gets a :class:`StreamWorker` actor that owns the stream's whole ingest (source,
face tracker, ring, merger: the Pipeline) and calls the model tier through a
:class:`~fesnet.realtime.cluster.backend.RayBackend`. The driver polls the actors for events and
writes them to the same sinks as a single-source run.

A stream whose actor dies (its node lost) ends with a ``status`` event and a clear error naming
it; the others carry on. A stream that stops answering polls for ``stall_s`` is killed and ends
the same way: nothing waits forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fesnet.realtime.types import SpotEvent

from .config import ClusterConfig, RetryPolicy

logger = logging.getLogger(__name__)


class StreamWorker:
    """One stream's ingest inside a Ray actor (wrapped with ``ray.remote`` by :func:`spawn`):
    the source, and a Spotter over an Engine whose backend is the model tier, run by a
    Pipeline, exactly as ``fesnet-spot run`` runs one stream in-process."""

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
    ) -> None:
        from fesnet.realtime.session import StreamModel, open_stream
        from fesnet.realtime.sources import open_source

        from .backend import RayBackend

        self.backend = RayBackend(handle, described, retry)
        self._events: list[SpotEvent] = []
        self._cond = threading.Condition()
        source = open_source(spec, pace=pace, stream=stream)
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
) -> Any:
    """A StreamWorker actor for ``spec``. Not restarted: a restarted actor would spot the
    source again from its start and repeat events, so a dead stream ends with an error."""
    import ray

    resources = {cfg.stream_resource: 1} if cfg.stream_resource else None
    actor_cls = ray.remote(num_cpus=cfg.stream_cpus, max_restarts=0, max_concurrency=4,
                           resources=resources)(StreamWorker)  # fmt: skip
    return actor_cls.remote(spec, stream, tier.handle, tier.described, merger, stride_frames,
                            pace, cfg.retry)  # fmt: skip


def drive_actors(
    actors: dict[str, Any],
    emit: Callable[[SpotEvent], None],
    stop: threading.Event,
    stall_s: float = 120.0,
    poll_s: float = 0.5,
) -> dict[str, dict[str, Any]]:
    """Poll every stream actor until each has ended; returns {stream: result}, where a result
    has ``summary`` and ``wire`` (the stream ended) or ``error`` (it died or stalled)."""
    import ray
    from ray import exceptions as rex

    results: dict[str, dict[str, Any]] = {}
    last_t: dict[str, float] = {}
    for stream, actor in actors.items():
        try:
            ray.get(actor.start.remote(), timeout=stall_s)
        except Exception as e:  # SourceError from the actor's __init__ arrives here
            results[stream] = _failed(stream, emit, f"could not start: {_root(e)}", 0.0)
    pending = {actors[s].poll.remote(poll_s): s for s in actors if s not in results}
    asked = {s: time.monotonic() for s in pending.values()}
    stopping = False
    while pending:
        if stop.is_set() and not stopping:
            stopping = True
            for s in pending.values():
                actors[s].request_stop.remote()
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
        now = time.monotonic()
        for ref in ready:
            stream = pending.pop(ref)
            try:
                out = ray.get(ref)
            except (rex.RayActorError, rex.RaySystemError) as e:
                msg = f"its actor died ({type(e).__name__}); the stream ended"
                results[stream] = _failed(stream, emit, msg, last_t.get(stream, 0.0))
                continue
            for e in out["events"]:
                last_t[stream] = e.t_s
                emit(e)
            if out["done"]:
                results[stream] = out
                if out["error"]:
                    emit(_status(stream, last_t.get(stream, 0.0), f"stream failed: {out['error']}"))
            else:
                new = actors[stream].poll.remote(poll_s)
                pending[new] = stream
                asked[stream] = now
        for ref, stream in list(pending.items()):
            if now - asked[stream] > stall_s:
                pending.pop(ref)
                ray.kill(actors[stream], no_restart=True)
                msg = f"its actor stopped answering for {stall_s:.0f} s and was killed"
                results[stream] = _failed(stream, emit, msg, last_t.get(stream, 0.0))
    return results


def _root(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e.__cause__
    return f"{type(cause or e).__name__}: {cause or e}"


def _status(stream: str, t_s: float, message: str) -> SpotEvent:
    return SpotEvent(type="status", stream=stream, t_s=t_s, message=message)


def _failed(stream: str, emit: Callable[[SpotEvent], None], message: str, t_s: float) -> dict:
    logger.error("stream %s: %s", stream, message)
    emit(_status(stream, t_s, message))
    return {"error": f"stream {stream}: {message}"}


def stream_names(specs: Sequence[str]) -> list[str]:
    """``s0, s1, ...``: short, unique, and the same in-process and on the cluster."""
    return [f"s{i}" for i in range(len(specs))]
