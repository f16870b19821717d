"""Cluster settings and the ``--cluster`` command-line options (no Ray import here).

``--cluster auto`` starts a private Ray on this machine, every port on 127.0.0.1, for the life of
the command. ``--cluster ray://HOST:PORT`` joins a running cluster through its Ray Client port
(``fesnet-spot cluster`` starts one on loopback; docs/SCALING.md shows a multi-machine one).
Without ``--cluster`` nothing here is used and everything runs in-process as before.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

LOCAL = "auto"
_RAY_CLIENT = re.compile(r"^ray://[^:/\s]+:\d+$")


class ClusterError(RuntimeError):
    """The cluster cannot be reached or set up, or the model tier stayed away too long."""


@dataclass(frozen=True)
class RetryPolicy:
    """How the ingest treats a model tier that does not answer (a replica or node lost).

    A call is re-sent (encode and window are pure functions, so a repeat cannot duplicate an
    event) every ``backoff_s`` until ``give_up_s`` has passed since the first failure; then the
    stream fails with a :class:`ClusterError` instead of waiting forever. ``call_timeout_s``
    bounds one call, so a replica on a node that vanished without a word is not waited on
    forever either."""

    call_timeout_s: float = 20.0
    give_up_s: float = 120.0
    backoff_s: float = 0.2
    gap_s: float = 1.0
    """A call answered (after re-sends or a wait for a replica) this long after it was made is
    reported as a gap."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where the work goes. ``replicas``: a fixed count, or 0 to autoscale between
    ``min_replicas`` and ``max_replicas`` on the queue of windows and frames waiting."""

    address: str = LOCAL
    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 2
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    stream_cpus: float = 1.0
    # Custom Ray resources the actors ask for, so streams land on ingest nodes and replicas
    # on model (GPU) nodes: `ray start --resources '{"ingest": 8}'` on those machines.
    stream_resource: str | None = None
    replica_resource: str | None = None
    max_batch_size: int = 16
    batch_wait_s: float = 0.002
    # --cluster auto only: the size of the private Ray started on this machine.
    local_cpus: int = 4
    local_object_store_mb: int = 300
    app_name: str = "fesnet"
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if self.address != LOCAL and not _RAY_CLIENT.match(self.address):
            raise ClusterError(
                f"--cluster {self.address!r}: use 'auto' (a private Ray on this machine) or "
                "ray://HOST:PORT (a running cluster's Ray Client port)"
            )
        if self.replicas < 0 or self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ClusterError(
                f"replicas {self.replicas} (0 = autoscale), min {self.min_replicas}, "
                f"max {self.max_replicas}: need replicas >= 0 and 1 <= min <= max"
            )

    @property
    def autoscale(self) -> bool:
        return self.replicas == 0


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", default=None, metavar="auto|ray://HOST:PORT",
        help="run the model tier (and, for `run`, each stream) on Ray: 'auto' starts a private "
        "Ray on this machine (loopback only), ray://HOST:PORT joins a running cluster "
        "(docs/SCALING.md). Default: everything in this process",
    )  # fmt: skip
    parser.add_argument(
        "--replicas", default="1", metavar="N|auto",
        help="with --cluster: model replicas (window engines), or 'auto' to autoscale between 1 "
        "and --max-replicas",
    )  # fmt: skip
    parser.add_argument("--max-replicas", type=int, default=2,
                        help="with --cluster --replicas auto: the most replicas")  # fmt: skip
    parser.add_argument("--replica-gpus", type=float, default=0.0,
                        help="with --cluster: GPUs each replica asks for (TensorRT nodes)")
    parser.add_argument("--replica-resource", default=None, metavar="NAME",
                        help="with --cluster: place replicas on nodes offering this custom "
                        "resource (e.g. 'model')")  # fmt: skip
    parser.add_argument("--stream-resource", default=None, metavar="NAME",
                        help="with --cluster (run): place stream actors on nodes offering this "
                        "custom resource (e.g. 'ingest')")  # fmt: skip


def cluster_config(args: argparse.Namespace) -> ClusterConfig | None:
    """The ClusterConfig the options ask for; None without ``--cluster``."""
    spec = getattr(args, "cluster", None)
    if spec is None:
        return None
    replicas_arg = str(getattr(args, "replicas", "1"))
    if replicas_arg == "auto":
        replicas = 0
    elif replicas_arg.isdigit() and int(replicas_arg) >= 1:
        replicas = int(replicas_arg)
    else:
        raise ClusterError(f"--replicas {replicas_arg!r}: a count >= 1 or 'auto'")
    return ClusterConfig(
        address=spec.strip(),
        replicas=replicas,
        max_replicas=max(1, getattr(args, "max_replicas", 2)),
        replica_gpus=getattr(args, "replica_gpus", 0.0),
        replica_resource=getattr(args, "replica_resource", None),
        stream_resource=getattr(args, "stream_resource", None),
    )
