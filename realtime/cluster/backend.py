"""The ingest's side of the model tier: a :class:`~fesnet.model.backends.Backend` whose
``encode`` and ``window`` are calls to the Serve deployment (realtime/cluster/serving.py).

A Spotter (or a viewer's hub) takes it like any other backend and never learns about Ray. The
ring, the merger and every cached feature stay with the stream; only a distinct frame's crop
(to encode), the features coming back, and a window's distinct slots (wire.py) travel.

It is also the transport of streams on the model tier (realtime/tier_engine.py): ``step`` sends
one stream's :class:`~fesnet.model.tier_serve.TierRequest` (each new crop once, uint8, with the
slots' geometry vectors) to the replica the stream is pinned to (its session id: the stream's
key without the segment) and brings its windows' probabilities back. The features then live on
that replica and never cross the wire.

Faults. A call that fails because the model tier lost a replica or a node (or does not answer
within ``call_timeout_s``) is re-sent until it succeeds or ``give_up_s`` has passed, then the
stream fails with :class:`ClusterError`. The calls are pure functions, so a re-sent call cannot
duplicate an event and a window is never skipped: the stream's events are the same as without
the fault, only later. Each gap is reported once it is over, as a message the calling thread
collects with :meth:`take_notices` (the Spotter turns them into ``status`` events of its stream).
An error raised by the model code itself (bad shapes) is not retried.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from .config import ClusterError, RetryPolicy
from .wire import WireStats, array_bytes, pack_windows

logger = logging.getLogger(__name__)


def _retryable(e: BaseException) -> bool:
    """Lost replicas, nodes and time-outs are; the model's own exceptions are not."""
    from ray import exceptions as rex
    from ray.serve import exceptions as sex

    if isinstance(e, rex.RayTaskError) and not isinstance(e, rex.RayActorError):
        cause = getattr(e, "cause", None)
        return cause is not None and _retryable(cause)
    return isinstance(
        e,
        (
            rex.RayActorError,
            rex.ActorUnavailableError,
            rex.NodeDiedError,
            rex.ObjectLostError,
            rex.RaySystemError,
            rex.GetTimeoutError,
            TimeoutError,
            sex.BackPressureError,
            sex.DeploymentUnavailableError,
            sex.ReplicaUnavailableError,
            ConnectionError,
        ),
    )


class RayBackend:
    """Backend-compatible adapter over the model tier's deployment handle. Thread-safe: every
    stream's thread may call it; notices are kept per calling thread. ``described`` is the
    replica's ``describe()``: the geometry channel the model reads and its window inputs."""

    def __init__(
        self,
        handle: Any,
        described: dict[str, Any],
        retry: RetryPolicy | None = None,
        stats: WireStats | None = None,
    ) -> None:
        self.handle = handle
        self.geometry = described["geometry"]  # what Engine reads to add the geometry channel
        self.window_inputs: tuple[str, ...] = tuple(described["window_inputs"])
        self.window_frames = int(described["window_frames"])
        self.name = f"ray-serve ({described['backend']})"
        self.retry = retry or RetryPolicy()
        self.stats = stats or WireStats()
        self._local = threading.local()
        self.retries = 0

    # -- Backend -------------------------------------------------------------------------------
    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops = np.ascontiguousarray(frames_u8)
        self.stats.add("encode_up", crops.nbytes)
        xp, xa = self._call("encode", crops)
        self.stats.add("encode_down", array_bytes((xp, xa)))
        return xp, xa

    def window(self, *inputs: np.ndarray | None) -> np.ndarray:
        """The window head's inputs in ``window_inputs`` order (``Engine.step`` passes them so):
        ``x_prime``, ``x_atten`` and, when the model reads it, ``geom``."""
        given = [a for a in inputs if a is not None]
        if len(given) != len(self.window_inputs):
            raise ValueError(f"the model tier takes {self.window_inputs}, got {len(given)} arrays")
        wire = pack_windows(dict(zip(self.window_inputs, given, strict=True)))
        self.stats.add("window_up", wire.nbytes)
        probs = self._call("window", wire)
        self.stats.add("window_down", array_bytes(probs))
        return probs

    def step(self, request: Any) -> Any:
        """One stream's tier request -> its reply, on the replica its key is pinned to."""
        self.stats.add("tier_up", request.nbytes)
        reply = self._call("step", request, session=request.key.rsplit("/", 1)[0])
        self.stats.add("tier_down", reply.nbytes)
        return reply

    # -- faults --------------------------------------------------------------------------------
    def take_notices(self) -> list[str]:
        """Gap reports for calls made on this thread since the last take (then cleared)."""
        notices = getattr(self._local, "notices", None)
        self._local.notices = []
        return notices or []

    def _call(self, method: str, payload: Any, session: str | None = None) -> Any:
        policy = self.retry
        handle = self.handle if session is None else self.handle.options(session_id=session)
        t_call = time.monotonic()
        first_failure: float | None = None
        last: BaseException | None = None
        while True:
            try:
                response = getattr(handle, method).remote(payload)
                out = response.result(timeout_s=policy.call_timeout_s)
            except Exception as e:
                if not _retryable(e):
                    raise
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    logger.warning("model tier: %s call failed (%s); re-sending",
                                   method, type(e).__name__)
                last = e
                if now - first_failure > policy.give_up_s:
                    raise ClusterError(
                        f"the model tier has not answered a {method} call for "
                        f"{now - first_failure:.0f} s (last error: {type(last).__name__}: "
                        f"{last}); is any replica alive?"
                    ) from e
                self.retries += 1
                time.sleep(policy.backoff_s)
                continue
            gap_s = time.monotonic() - t_call
            if first_failure is not None:
                self._notice(
                    f"model tier: a {method} call was lost ({type(last).__name__}); "
                    f"re-sent and answered after a {gap_s:.2f} s gap"
                )
            elif gap_s > policy.gap_s:
                self._notice(f"model tier: a {method} call waited {gap_s:.2f} s for a replica")
            return out

    def _notice(self, message: str) -> None:
        if getattr(self._local, "notices", None) is None:
            self._local.notices = []
        self._local.notices.append(message)
        logger.warning("%s", message)
