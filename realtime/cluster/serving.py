"""The model tier: a Ray Serve deployment of the window engine (encoder + window head).

Each replica loads the checkpoint it is given (its bytes travel with the deployment, so a model
node needs no copy of the file) into one backend, chosen by the same rules as every other
program (``fesnet.model.runtime.build_backend``: ONNX Runtime on CPU, TensorRT on a GPU node),
and serves two batched methods. ``@serve.batch`` gathers the calls that arrive from different
streams within ``batch_wait_s`` (up to ``max_batch_size``) into one backend call:

- ``encode(crops (N, 112, 112, 3) uint8)`` -> ``(x_prime (N, ...), x_atten (N, ...))``;
- ``window(WireWindows)`` -> probs ``(B, T, 3)``; the per-slot arrays travel by the names of
  ``Engine.window_inputs`` (``x_prime``, ``x_atten``, and ``geom`` when the network reads the
  geometry channel) and reach ``backend.window`` in that order.

- ``step(TierRequest)`` -> ``TierReply``: the model tier (model/tier_serve.py). The stream's
  features live in this replica's tier: the ingest sends each new crop once (uint8) with the
  slot's geometry vector and gets its windows' probabilities back. ``@serve.batch`` gathers the
  steps of every stream pinned here into one tier step (every new crop in one encode call,
  every window in one window call). A stream is pinned to one replica by Serve's consistent-
  hash request router on its session id (realtime/cluster/placement.py: ``deploy``); when that
  replica is lost the stream's requests go to another, which does not hold its ring: its
  windows come back missing and the stream rebuilds the ring from its own (tier_engine.py).
  The tier (its rings, and on a GPU its compiled graphs) is made when the replica starts, so
  the deployment is running only once it is ready, for this replica's hardware by the runtime
  loader's rule (``serving_of``: the CUDA tier on a GPU node).

``encode`` and ``window`` hold no stream state: any replica can answer them, so Serve may route
around a lost one and the ingest may re-send a call (realtime/cluster/backend.py).

Loopback. Ray 2.60 starts an inter-deployment gRPC server in every replica on ``[::]:0``, every
interface, with no option to move it (ray-project/ray#64544; Serve uses it only with
``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``). :func:`bind_replica_grpc_to_node` makes the replica bind
it to its node's own Ray address instead: 127.0.0.1 on a loopback cluster, the private address
on a multi-machine one. The replica constructor runs before Serve starts that server, so it is
done there; tests/test_cluster.py checks every listening socket of the cluster.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from .wire import WireWindows, unpack_windows

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 16
DEFAULT_WAIT_S = 0.002
TIER_STREAMS = {"cpu": 16, "cuda": 2048}
"""Streams a replica's tier holds rings for (more: the least recently used ring is given up and
its stream rebuilds it): 3.2 MB a stream of host memory on a CPU, 1.6 MB of GPU memory in fp16."""
_ALL_INTERFACES = ("[::]:", "0.0.0.0:")


def checkpoint_blob(path: str | Path | None) -> dict[str, Any]:
    """A checkpoint's weights and JSON as bytes (what a replica on another machine loads)."""
    from fesnet.model import checkpoint as ckpt_mod

    pt = Path(path) if path is not None else ckpt_mod.DEFAULT_CHECKPOINT
    pt = pt.with_suffix(".pt")
    return {"pt": pt.read_bytes(), "json": ckpt_mod.sidecar(pt).read_bytes(), "name": pt.name}


def _load_blob(blob: dict[str, Any]) -> Any:
    from fesnet.model.runtime import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="fesnet-ckpt-") as tmp:
        pt = Path(tmp) / str(blob["name"])
        pt.write_bytes(blob["pt"])
        pt.with_suffix(".json").write_bytes(blob["json"])
        return load_checkpoint(pt)


def bind_replica_grpc_to_node() -> str | None:
    """In a Serve replica process: the replica's inter-deployment gRPC server binds to this
    node's Ray address, not every interface (module docstring). Returns that address, or None
    where this Ray has no such server to move (then the cluster test says what listens)."""
    import ray
    from ray.serve._private import replica as replica_mod

    add_port = getattr(replica_mod, "add_port_to_grpc_server", None)
    if add_port is None:
        logger.warning("this Ray has no replica gRPC bind to move; check what listens")
        return None
    if getattr(add_port, "fesnet_host", None) is not None:
        return str(add_port.fesnet_host)
    host = ray.util.get_node_ip_address()
    bracketed = f"[{host}]" if ":" in host else host

    def add_port_on_node(server: Any, address: str) -> int:
        if address.startswith(_ALL_INTERFACES):
            address = f"{bracketed}:{address.rsplit(':', 1)[1]}"
        return add_port(server, address)

    add_port_on_node.fesnet_host = host  # type: ignore[attr-defined]
    replica_mod.add_port_to_grpc_server = add_port_on_node
    return host


class WindowEngine:
    """One replica of the model tier (see the module docstring)."""

    def __init__(
        self,
        blob: dict[str, Any],
        backend: str = "auto",
        threads: int = 1,
        max_batch_size: int = DEFAULT_MAX_BATCH,
        batch_wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        from fesnet.model.runtime import build_backend
        from fesnet.realtime.engine import GEOMETRY, WINDOW_INPUTS

        self.grpc_host = bind_replica_grpc_to_node()
        ckpt = _load_blob(blob)
        self.checkpoint = ckpt
        self.backend_name = backend
        self.threads = threads
        self._service: Any = None
        self.backend = build_backend(backend, ckpt, threads)
        self.tier_service()
        self.window_frames = ckpt.config.window_frames
        self.window_inputs = WINDOW_INPUTS + ((GEOMETRY,) if self.backend.geometry else ())
        for method in (self.encode, self.window, self.step):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_s)
        self.batch_sizes: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_WAIT_S)
    async def encode(self, crops: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        sizes = [len(c) for c in crops]
        self.batch_sizes[f"encode:{len(crops)}"] += 1
        self.calls["encode"] += len(crops)
        xp, xa = self.backend.encode(np.concatenate(crops) if len(crops) > 1 else crops[0])
        cuts = np.cumsum(sizes)[:-1]
        return list(zip(np.split(xp, cuts), np.split(xa, cuts), strict=True))

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_WAIT_S)
    async def window(self, requests: list[WireWindows]) -> list[np.ndarray]:
        """Requests of the same window length share one head call."""
        self.batch_sizes[f"window:{len(requests)}"] += 1
        self.calls["window"] += len(requests)
        out: list[np.ndarray | None] = [None] * len(requests)
        groups: dict[int, list[int]] = collections.defaultdict(list)
        for i, r in enumerate(requests):
            if set(r.names) != set(self.window_inputs):
                raise ValueError(f"window arrays {r.names}; this model takes {self.window_inputs}")
            groups[r.window_frames].append(i)
        for members in groups.values():
            parts = [unpack_windows(requests[i]) for i in members]
            inputs = [np.concatenate([p[n] for p in parts]) for n in self.window_inputs]
            probs = np.asarray(self.backend.window(*inputs), np.float32)  # (B, T, 3)
            cuts = np.cumsum([requests[i].n_windows for i in members])[:-1]
            for i, p in zip(members, np.split(probs, cuts), strict=True):
                out[i] = p
        return out  # type: ignore[return-value]

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_WAIT_S)
    async def step(self, requests: list[Any]) -> list[Any]:
        """The streams' tier requests that arrived together, as one tier step."""
        self.batch_sizes[f"step:{len(requests)}"] += 1
        self.calls["step"] += len(requests)
        return self.tier_service().serve(requests)

    def tier_service(self) -> Any:
        """The replica's model tier (module docstring)."""
        if self._service is None:
            from fesnet.model.runtime import RuntimeConfig, serving_of
            from fesnet.model.tier_run import make_tier
            from fesnet.model.tier_serve import TierService

            config = RuntimeConfig(backend=self.backend_name, threads=self.threads,
                                   serving="tier")
            _, opts = serving_of(config)
            device = str(opts.get("device", "cpu"))
            tier = make_tier(opts.pop("name"), self.checkpoint,
                             max_streams=TIER_STREAMS.get(device, 16), **opts)
            self._service = TierService(tier)
            logger.info("model tier on this replica: %s", tier.name)
        return self._service

    def describe(self) -> dict[str, Any]:
        """What the ingest must know to feed this model: the backend's name, the geometry
        channel it reads (a ``GeometryConfig`` or None) and the window inputs by name."""
        return {
            "backend": getattr(self.backend, "name", "?"),
            "geometry": self.backend.geometry,
            "window_inputs": self.window_inputs,
            "window_frames": self.window_frames,
        }

    def info(self) -> dict[str, Any]:
        """Which process and node this replica is, and the batch sizes it has seen."""
        import ray

        ctx = serve.get_replica_context()
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "replica": ctx.replica_id.unique_id,
            "grpc_host": self.grpc_host,
            "batch_sizes": dict(self.batch_sizes),
            "calls": dict(self.calls),
            "tier_streams": None if self._service is None else self._service.streams,
        }
