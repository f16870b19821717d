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
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import LOCAL, ClusterConfig, ClusterError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Ray's single-machine mode for this process and its children: every node address and
    every port Ray opens is on 127.0.0.1."""
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by ray._private.services


def connect(cfg: ClusterConfig) -> None:
    """ray.init for ``cfg.address``: a private loopback Ray (``auto``), or a running cluster
    through Ray Client. Idempotent within a process."""
    loopback_only() if cfg.address == LOCAL else os.environ.setdefault(
        "RAY_USAGE_STATS_ENABLED", "0"
    )
    import ray

    if ray.is_initialized():
        return
    try:
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
    except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError, ...
        raise ClusterError(f"cannot reach the Ray cluster at {cfg.address}: {e}") from e
    logger.info("joined Ray at %s: %s", cfg.address, ray.cluster_resources())


def _join(address: str, attempts: int = 3, backoff_s: float = 2.0) -> None:
    """Ray Client's connect, tried ``attempts`` times: its server starts a process per client,
    and that start fails now and then on a loaded machine ("Starting Ray client server
    failed")."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            ray.init(address, log_to_driver=False, namespace="fesnet")
            return
        except (ConnectionError, RuntimeError) as e:
            if attempt == attempts:
                raise
            # The last line says why; the lines above are the server's traceback.
            why = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            logger.warning("joining %s failed (%s); trying again", address, why)
            time.sleep(backoff_s * attempt)


def shutdown(cfg: ClusterConfig, tier: ModelTier | None = None) -> None:
    """Leave the cluster. The model tier is removed when this process started Ray
    (``auto``); on a shared cluster it stays for the next server unless ``tier`` is given."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
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
        """A Backend over this tier for one ingest process (realtime/cluster/backend.py)."""
        from .backend import RayBackend

        return RayBackend(self.handle, self.described, self.config.retry, stats)


def deploy(
    cfg: ClusterConfig, checkpoint: str | Path | None = None, backend: str = "auto",
    threads: int | None = 1,
) -> ModelTier:  # fmt: skip
    """Start (or update) the Serve application ``cfg.app_name`` running the window engine."""
    from ray import serve

    from .serving import WindowEngine, checkpoint_blob

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
    deployment = serve.deployment(WindowEngine).options(
        name="WindowEngine",
        ray_actor_options=actor,
        max_ongoing_requests=4 * cfg.max_batch_size,
        health_check_period_s=2.0,
        health_check_timeout_s=10.0,
        **scale,
    )
    app = deployment.bind(
        checkpoint_blob(checkpoint), backend, threads or 1, cfg.max_batch_size, cfg.batch_wait_s
    )
    try:
        # Handles only: no HTTP proxy, no gRPC proxy, so Serve opens no ingress port at all.
        serve.start(proxy_location="Disabled", http_options={"host": LOOPBACK})
        handle = serve.run(app, name=cfg.app_name, route_prefix=None)
        described = _describe(cfg)
    except Exception as e:
        raise ClusterError(f"could not deploy the model tier: {e}") from e
    return ModelTier(handle, described, cfg)


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
    it. ``close()`` leaves the cluster (removing the tier where ``shutdown`` says so)."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.tier: ModelTier | None = None
        self._joined = False

    def backend(self, ckpt: Any, config: Any) -> Any:
        self._joined = True
        connect(self.cfg)
        self.tier = deploy(self.cfg, ckpt.path, config.backend, config.threads)
        return self.tier.backend()

    def close(self, remove_tier: bool = False) -> None:
        """Leave the cluster (nothing to do when the loader refused the model before placing
        it: Ray was never imported)."""
        if self._joined:
            shutdown(self.cfg, self.tier if remove_tier else None)


def replica_infos(tier: ModelTier, calls: int = 8) -> list[dict[str, Any]]:
    """``info()`` of the replicas that answer ``calls`` calls (distinct by pid)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(calls):
        info = tier.handle.info.remote().result(timeout_s=tier.config.retry.call_timeout_s)
        seen[info["pid"]] = info
    return list(seen.values())
