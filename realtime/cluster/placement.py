"""Joining or starting Ray, placing the model tier on it (:class:`RayPlacement`, what the runtime
loader is handed to load a model whose backend is that tier).

Loopback. On Linux, Ray 2.60 turns a node address of 127.0.0.1 into the machine's outward
address and listens on every interface; its single-machine mode
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the mode it uses on macOS and Windows) keeps every node
at 127.0.0.1 and binds its ports there. :func:`loopback_only` puts this process (and the Ray
processes it starts) in that mode: ``--cluster auto`` and ``fesnet-spot cluster`` use it, with
no dashboard, no HTTP proxy and no gRPC proxy. The one port Ray itself still opens on every
interface, the Serve replica's, is moved in the replica (serving.py). A cluster across
machines is started with ``ray start`` on private addresses (docs/SCALING.md) and must live on
a private network.

Waits. Joining ``ray://HOST:PORT`` first checks, within ``JOIN_TIMEOUT_S``, that something
there speaks gRPC (Ray Client does): nothing listening fails at once, nothing answering after
that long fails with :class:`ClusterUnavailable` (Ray Client alone would retry for ~100 s).
Model replicas the cluster can never place are refused before deploying; replicas that can
be placed but do not start (resources held by others) are reported after ``REPORT_AFTER_S``
with Serve's reason. Ctrl-C / SIGTERM end either wait at once (``exitcodes.stop_signals_raise``).

Signals. ``ray.init`` replaces the command's SIGTERM handler (with ``sys.exit(15)`` while it
starts, then Ray's C++ failure handler, which aborts with a stack dump) and leaves it in force;
:func:`connect` calls it inside ``exitcodes.stop_signals_raise``, so a SIGTERM while Ray starts
stops the command as anywhere else and the command's own handlers are back once it returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from fesnet.model.third_party_logs import quiet_ray, quiet_ray_client_log
from fesnet.realtime import exitcodes

from .config import LOCAL, ClusterConfig, ClusterError, ClusterUnavailable, split_address

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
JOIN_TIMEOUT_S = 10.0  # for a Ray Client port to answer at all
REPORT_AFTER_S = 30.0  # model replicas not running after this long are reported
DEPLOYMENT = "WindowEngine"
STICKY_ROUTER = "ray.serve.experimental.consistent_hash_router.ConsistentHashRouter"
"""Serve's consistent-hash request router: a request with a session id goes to the replica the
id hashes to among the running ones, and only there (no fallback: a stream's ring lives on one
replica); one without goes to any. When a replica is lost its ids hash to the others."""
END_GRACE_S = 2.0  # for a private Ray's processes to end on SIGTERM before SIGKILL (Ray: 1 s)


def loopback_only() -> None:
    """Ray's single-machine mode for this process and its children: every node address and
    every port Ray opens is on 127.0.0.1."""
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by ray._private.services


def connect(cfg: ClusterConfig) -> None:
    """ray.init for ``cfg.address``: a private loopback Ray (``auto``), or a running cluster
    through Ray Client. Idempotent within a process.

    Ray's auto-connect is turned off for this process (before Ray is imported): a Ray call
    after :func:`shutdown` (Serve's background threads make some) would otherwise start a new
    local Ray from that thread, outside :func:`loopback_only`'s settings."""
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    loopback_only() if cfg.address == LOCAL else os.environ.setdefault(
        "RAY_USAGE_STATS_ENABLED", "0"
    )
    import ray

    if ray.is_initialized():
        return
    if cfg.address != LOCAL:
        with exitcodes.stop_signals_raise():
            check_reachable(cfg.address)
    try:
        with exitcodes.stop_signals_raise(), quiet_ray():  # ray.init sets SIGTERM handlers
            _init(cfg)
    except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError, ...
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {cfg.address}: {one_line(e)}"
        ) from e
    logger.info("joined Ray at %s: %s", cfg.address, ray.cluster_resources())


def _init(cfg: ClusterConfig) -> None:
    import ray

    if cfg.address == LOCAL:
        ray.init(
            address="local",  # a new private Ray, never one another process left running
            _node_ip_address=LOOPBACK,
            num_cpus=cfg.local_cpus,
            object_store_memory=cfg.local_object_store_mb * 2**20,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            namespace="fesnet",
        )
    else:
        _join(cfg.address)


def check_reachable(address: str, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """:class:`ClusterUnavailable` unless a gRPC server (a Ray Client server is one) answers
    at ``ray://HOST:PORT`` within ``timeout_s``. A refused connection fails at once."""
    import grpc

    host, port = split_address(address)
    t0 = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ClusterUnavailable(f"cannot reach the Ray cluster at {address}: {why}") from e
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s - (time.monotonic() - t0))
    except grpc.FutureTimeoutError as e:
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {address}: something accepts connections there "
            f"but no Ray Client answered within {timeout_s:g} s"
        ) from e
    finally:
        channel.close()


def one_line(e: BaseException) -> str:
    """An exception as one line: Ray Client passes its server's whole traceback on as the
    message, whose last line names the error ("RuntimeError: Starting Ray client server
    failed. See ...")."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return lines[-1] if any(ln.startswith("Traceback") for ln in lines) else lines[0]


def _join(address: str, attempts: int = 3, backoff_s: float = 2.0) -> None:
    """Ray Client's connect, tried ``attempts`` times: its server starts a process per client,
    and that start fails now and then on a loaded machine ("Starting Ray client server
    failed")."""
    import ray

    quiet_ray_client_log()
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address, log_to_driver=False, namespace="fesnet")
            return
        except (ConnectionError, RuntimeError) as e:
            if attempt == attempts:
                raise
            logger.warning("joining %s failed (%s); trying again", address, one_line(e))
            time.sleep(backoff_s * attempt)


def shutdown(cfg: ClusterConfig, tier: ModelTier | None = None) -> None:
    """Leave the cluster. The model tier is removed when this process started Ray
    (``auto``); on a shared cluster it stays for the next server unless ``tier`` is given."""
    import ray

    if not ray.is_initialized():
        return
    from ray import serve

    with quiet_ray():
        if tier is not None or cfg.address == LOCAL:
            try:
                serve.delete(cfg.app_name)
            except Exception as e:
                logger.warning("could not remove the model tier: %r", e)
        ray.shutdown()


@dataclass
class ModelTier:
    """The deployed window engine: its handle and what a replica said about the model."""

    handle: Any
    described: dict[str, Any]
    config: ClusterConfig

    def backend(self, stats: Any = None) -> Any:
        """A Backend over this tier for one ingest process (realtime/cluster/backend.py). A Ray
        Client driver (``ray://``) calls it through a relay inside the cluster (relay.py)."""
        from .backend import RayBackend

        handle = self.handle
        if self.config.address != LOCAL:
            from .relay import RelayedHandle

            handle = RelayedHandle(self.config.app_name)
        return RayBackend(handle, self.described, self.config.retry, stats)


def deploy(
    cfg: ClusterConfig, checkpoint: str | Path | None = None, backend: str = "auto",
    threads: int | None = 1, streams: int = 0,
) -> ModelTier:
    """Start (or update) the Serve application ``cfg.app_name`` running the window engine.
    ClusterError when the cluster can never place its replicas and ``streams`` stream actors
    (``ClusterConfig.placement_error``)."""
    import ray
    from ray import serve

    from .serving import WindowEngine, checkpoint_blob

    problem = cfg.placement_error(ray.cluster_resources(), streams)
    if problem is not None:
        raise ClusterError(problem)

    actor: dict[str, Any] = {"num_cpus": cfg.replica_cpus}
    if cfg.replica_gpus > 0:
        actor["num_gpus"] = cfg.replica_gpus
    if cfg.replica_resource:
        actor["resources"] = {cfg.replica_resource: 1}
    scale: dict[str, Any]
    if cfg.autoscale:
        scale = {
            "autoscaling_config": {
                "min_replicas": cfg.min_replicas,
                "max_replicas": cfg.max_replicas,
                "target_ongoing_requests": cfg.max_batch_size / 2,
            }
        }
    else:
        scale = {"num_replicas": cfg.replicas}
    from ray.serve.config import RequestRouterConfig

    router = RequestRouterConfig(request_router_class=STICKY_ROUTER,
                                 request_router_kwargs={"num_fallback_replicas": 0})
    deployment = serve.deployment(WindowEngine).options(
        name=DEPLOYMENT,
        ray_actor_options=actor,
        request_router_config=router,
        max_ongoing_requests=4 * cfg.max_batch_size,
        health_check_period_s=2.0,
        health_check_timeout_s=10.0,
        **scale,
    )
    app = deployment.bind(
        checkpoint_blob(checkpoint), backend, threads or 1, cfg.max_batch_size, cfg.batch_wait_s
    )
    try:
        with quiet_ray():
            # Handles only: no HTTP proxy, no gRPC proxy, so Serve opens no ingress port at all.
            serve.start(proxy_location="Disabled", http_options={"host": LOOPBACK})
            target = serve.RunTarget(target=app, name=cfg.app_name, route_prefix=None)
            handle = serve.run_many([target], wait_for_applications_running=False)[0]
            with exitcodes.stop_signals_raise():
                await_model_tier(lambda: tier_state(cfg), logger.warning)
            described = _describe(cfg)
    except ClusterError:
        raise
    except Exception as e:
        raise ClusterError(f"could not deploy the model tier: {e}") from e
    return ModelTier(handle, described, cfg)


def tier_state(cfg: ClusterConfig) -> tuple[str, str]:
    """(the Serve application's status, what Serve says about its replicas)."""
    from ray import serve

    def name(state: Any) -> str:  # Serve's states are str enums: their value is the name
        return str(getattr(state, "value", state))

    app = serve.status().applications.get(cfg.app_name)
    if app is None:
        return "NOT_STARTED", "not deployed yet"
    dep = app.deployments.get(DEPLOYMENT)
    if dep is None:
        return name(app.status), app.message or "no replica yet"
    states = {name(k): v for k, v in dep.replica_states.items()}
    running = f"{states.get('RUNNING', 0)} of {sum(states.values())} replica(s) running"
    return name(app.status), f"{running}; {dep.message or app.message or 'no message'}"


def await_model_tier(
    state: Callable[[], tuple[str, str]],
    report: Callable[[str], None],
    report_after_s: float = REPORT_AFTER_S,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Until ``state()`` says RUNNING; ClusterError on DEPLOY_FAILED. Still waiting after
    ``report_after_s``: ``report`` says so once, with Serve's reason (replicas whose resources
    are held by others wait, as Serve does, until the resources are free)."""
    t0 = clock()
    reported = False
    while True:
        status, why = state()
        if status == "RUNNING":
            return
        if status == "DEPLOY_FAILED":
            raise ClusterError(f"could not deploy the model tier: {why}")
        if not reported and clock() - t0 >= report_after_s:
            report(f"the model tier is not running after {report_after_s:g} s: "
                   f"{why.rstrip('. ')}. Still waiting (Ctrl-C stops)")
            reported = True
        sleep(poll_s)


def _describe(cfg: ClusterConfig) -> dict[str, Any]:
    """What the deployed model says about itself, asked by a task inside the cluster. A Ray
    Client driver that sends a Serve request itself keeps a router whose queue-length probes
    time out on a loaded machine (0.1 s) and are cancelled; their late replies then raise
    ``InvalidStateError`` in Ray Client's data thread (tracebacks mid-run and at exit)."""
    import ray

    timeout_s = cfg.retry.call_timeout_s
    ask = ray.remote(num_cpus=0)(_ask_tier)
    return ray.get(ask.remote(cfg.app_name, timeout_s), timeout=timeout_s + 60.0)


def _ask_tier(app_name: str, timeout_s: float) -> dict[str, Any]:
    from ray import serve

    return serve.get_app_handle(app_name).describe.remote().result(timeout_s=timeout_s)


class RayPlacement:
    """The model on Ray, as a placement for ``fesnet.model.runtime.load_runtime``: the loader
    resolves the checkpoint, stride, merger settings and profile by the rules every program
    shares, then this joins the cluster, deploys the model tier and hands back a backend over
    it. ``close()`` leaves the cluster (removing the tier where ``shutdown`` says so); after a
    private Ray (``auto``) no process of it is left, whenever the command was stopped."""

    def __init__(self, cfg: ClusterConfig, streams: int = 0) -> None:
        self.cfg = cfg
        self.streams = streams  # stream actors that will need a place too (``run``)
        self.tier: ModelTier | None = None
        self._backend: Any = None
        self._joined = False
        self._not_ray: set[int] | None = None  # this process's children before a private Ray

    def backend(self, ckpt: Any, config: Any) -> Any:
        self._joined = True
        if self.cfg.address == LOCAL:
            self._not_ray = {p.pid for p in _descendants()}
        connect(self.cfg)
        self.tier = deploy(self.cfg, ckpt.path, config.backend, config.threads, self.streams)
        self._backend = self.tier.backend()
        return self._backend

    def tier_transport(self) -> Any:
        """The placed model tier for streams in this process: the same client as ``backend``
        (its ``step``: a stream's crops up, its windows' probabilities down)."""
        return self._backend

    def close(self, remove_tier: bool = False) -> None:
        """Leave the cluster (nothing to do when the loader refused the model before placing
        it: Ray was never imported). A private Ray's processes are ended and waited for: each
        one this process started since joining, with those its raylet started (the agents,
        the workers), seen before Ray shuts down. A stop while ``ray.init`` started the node
        leaves Ray nothing to shut down, and the raylet's agents, orphaned when it dies with
        this process, lived on for minutes."""
        if not self._joined:
            return
        self._joined = False
        ours = self._not_ray
        started = [p for p in _descendants() if p.pid not in ours] if ours is not None else []
        shutdown(self.cfg, self.tier if remove_tier else None)
        end_processes(started)


def _descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def end_processes(procs: list[psutil.Process], grace_s: float = END_GRACE_S) -> None:
    """SIGTERM each of ``procs`` still running, SIGKILL those left after ``grace_s``; returns
    when every one has ended (a zombie has: its parent, or init, reaps it) or, at worst,
    ``grace_s`` after the SIGKILL."""
    for p in _running(procs):
        with contextlib.suppress(psutil.Error):
            p.terminate()
    for last in (False, True):
        deadline = time.monotonic() + grace_s
        while _running(procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        if last or not _running(procs):
            return
        for p in _running(procs):
            with contextlib.suppress(psutil.Error):
                p.kill()


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out

