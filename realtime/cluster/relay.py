"""The model tier called from a Ray Client driver (``--cluster ray://...``), through a relay actor
inside the cluster.

A Serve handle routes each request itself: it asks the replicas for their queue lengths with a
0.1 s deadline and cancels the probes that are late. In a Ray Client driver each probe is a
call over the client's data channel, and the late reply to a cancelled probe raises
``InvalidStateError`` in Ray Client's data thread: a traceback on stderr whenever the machine is
busy, and again as the connection closes. So a Ray Client process never routes a request: a
relay actor inside the cluster holds the Serve handle (its probes are ordinary calls there) and
the driver calls the relay with blocking gets, which Ray Client answers without futures.

``fesnet-spot serve`` and ``webrtc-server`` with ``ray://`` call the tier this way (each camera's
ingest stays in the server); ``run`` needs no relay (its streams run in actors inside the
cluster), nor does a private Ray (``auto``), whose driver is no Ray Client.
"""

from __future__ import annotations

import threading
from typing import Any


class Relay:
    """The actor: the Serve handle of the application ``app_name``, inside the cluster. Async,
    so it forwards every camera's calls at once."""

    def __init__(self, app_name: str) -> None:
        from ray import serve

        self.handle = serve.get_app_handle(app_name)

    async def call(self, method: str, session: str | None, *args: Any) -> Any:
        handle = self.handle if session is None else self.handle.options(session_id=session)
        return await getattr(handle, method).remote(*args)


class RelayedHandle:
    """What :class:`~fesnet.realtime.cluster.backend.RayBackend` calls, as it calls a Serve
    handle (``handle.encode.remote(x).result(timeout_s=...)``, and
    ``handle.options(session_id=key).step.remote(request)`` for a stream pinned to the replica
    its key hashes to), over one relay actor. The actor
    is started at the first call (a ``run`` loads a backend it never calls) with no CPU of its
    own, and restarted by Ray on another node if its node is lost (a call meanwhile fails with
    an error RayBackend re-sends); it ends with this driver's connection."""

    def __init__(self, app_name: str) -> None:
        self.app_name = app_name
        self._actor: Any = None
        self._lock = threading.Lock()
        self.encode = _Method(self, "encode")
        self.window = _Method(self, "window")
        self.step = _Method(self, "step")

    def options(self, session_id: str) -> _Pinned:
        """The calls of one stream, routed by the relay's handle to the replica ``session_id``
        is pinned to (placement.STICKY_ROUTER)."""
        return _Pinned(self, session_id)

    def actor(self) -> Any:
        with self._lock:
            if self._actor is None:
                import ray

                relay = ray.remote(num_cpus=0, max_restarts=-1)(Relay)
                self._actor = relay.remote(self.app_name)
            return self._actor


class _Pinned:
    def __init__(self, handle: RelayedHandle, session: str) -> None:
        self.step = _Method(handle, "step", session)


class _Method:
    def __init__(self, handle: RelayedHandle, name: str, session: str | None = None) -> None:
        self.handle, self.name, self.session = handle, name, session

    def remote(self, *args: Any) -> _Response:
        return _Response(self.handle.actor().call.remote(self.name, self.session, *args))


class _Response:
    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def result(self, timeout_s: float | None = None) -> Any:
        import ray

        return ray.get(self.ref, timeout=timeout_s)
