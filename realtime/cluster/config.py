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

from fesnet.argtypes import float_range, int_range

LOCAL = "auto"
_RAY_CLIENT = re.compile(r"^ray://([^:/\s]+):(\d+)$")
MAX_REPLICAS = 1024  # argparse's bound; what a cluster can place is checked when it is joined


class ClusterError(RuntimeError):
    """The cluster cannot be set up as asked (a bad address, more than it can place: exit code
    2), or the model tier stayed away too long."""


class ClusterUnavailable(ClusterError):
    """Nothing answers at the cluster's address: a failure, not bad input (exit code 1, as a
    remote-camera server that does not answer)."""


def check_address(address: str) -> str:
    """``auto`` or ``ray://HOST:PORT`` with a port in 1-65535; ClusterError saying what to use
    otherwise (so an impossible port is refused at once, not after a connection timeout)."""
    address = address.strip()
    if address == LOCAL:
        return address
    m = _RAY_CLIENT.match(address)
    if m is None:
        raise ClusterError(
            f"--cluster {address!r}: use 'auto' (a private Ray on this machine) or "
            "ray://HOST:PORT (a running cluster's Ray Client port)"
        )
    if not 1 <= int(m.group(2)) <= 65535:
        raise ClusterError(f"--cluster {address}: the port must be between 1 and 65535")
    return address


def split_address(address: str) -> tuple[str, int]:
    """``ray://HOST:PORT`` -> (HOST, PORT)."""
    m = _RAY_CLIENT.match(check_address(address))
    if m is None:
        raise ClusterError(f"--cluster {address}: not a ray://HOST:PORT address")
    return m.group(1), int(m.group(2))


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
        check_address(self.address)
        if self.replicas < 0 or self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ClusterError(
                f"replicas {self.replicas} (0 = autoscale), min {self.min_replicas}, "
                f"max {self.max_replicas}: need replicas >= 0 and 1 <= min <= max"
            )

    @property
    def autoscale(self) -> bool:
        return self.replicas == 0

    def demand(self, streams: int = 0) -> dict[str, float]:
        """The Ray resources the model replicas that must start (``replicas``, or
        ``min_replicas`` when autoscaling) and ``streams`` stream actors ask for, summed."""
        n = self.min_replicas if self.autoscale else self.replicas
        need: dict[str, float] = {"CPU": n * self.replica_cpus + streams * self.stream_cpus}
        if self.replica_gpus > 0:
            need["GPU"] = n * self.replica_gpus
        for resource, count in ((self.replica_resource, n), (self.stream_resource, streams)):
            if resource and count:
                need[resource] = need.get(resource, 0.0) + count
        return need

    def placement_error(self, totals: dict[str, float], streams: int = 0) -> str | None:
        """Why the cluster, whose resources are ``totals`` (``ray.cluster_resources()``), can
        never place what this config asks for; None when it can (resources in use by others
        may still make replicas wait: runtime.py reports that)."""
        short = [f"{need:g} {name} (the cluster has {totals.get(name, 0.0):g})"
                 for name, need in self.demand(streams).items()
                 if need > totals.get(name, 0.0) + 1e-9]
        if not short:
            return None
        n = self.min_replicas if self.autoscale else self.replicas
        what = f"{n} model replica(s)" + (f" and {streams} stream(s)" if streams else "")
        return (f"{what} cannot be placed on the cluster at {self.address}: they need "
                f"{'; '.join(short)}. Ask for fewer replicas or streams, or give the cluster "
                "more")


def _address_arg(text: str) -> str:
    try:
        return check_address(text)
    except ClusterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def replicas_arg(text: str) -> int:
    """``--replicas``: a count in 1..MAX_REPLICAS, or ``auto`` (0: autoscale)."""
    if text.strip() == "auto":
        return 0
    return int_range(1, MAX_REPLICAS)(text)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", default=None, metavar="auto|ray://HOST:PORT", type=_address_arg,
        help="run the model tier (and, for `run`, each stream) on Ray: 'auto' starts a private "
        "Ray on this machine (loopback only), ray://HOST:PORT joins a running cluster "
        "(docs/SCALING.md). Default: everything in this process",
    )
    parser.add_argument(
        "--replicas", default=1, metavar="N|auto", type=replicas_arg,
        help=f"with --cluster: model replicas (window engines, 1-{MAX_REPLICAS}), or 'auto' to "
        "autoscale between 1 and --max-replicas. Replicas (and, for `run`, streams) the "
        "cluster cannot place are refused when it is joined",
    )
    parser.add_argument("--max-replicas", type=int_range(1, MAX_REPLICAS), default=2,
                        help="with --cluster --replicas auto: the most replicas")
    parser.add_argument("--replica-gpus", type=float_range(0.0), default=0.0,
                        help="with --cluster: GPUs each replica asks for (TensorRT nodes)")
    parser.add_argument("--replica-resource", default=None, metavar="NAME",
                        help="with --cluster: place replicas on nodes offering this custom "
                        "resource (e.g. 'model')")
    parser.add_argument("--stream-resource", default=None, metavar="NAME",
                        help="with --cluster (run): place stream actors on nodes offering this "
                        "custom resource (e.g. 'ingest')")


def cluster_config(args: argparse.Namespace) -> ClusterConfig | None:
    """The ClusterConfig the options ask for; None without ``--cluster``."""
    spec = getattr(args, "cluster", None)
    if spec is None:
        return None
    return ClusterConfig(
        address=spec.strip(),
        replicas=getattr(args, "replicas", 1),
        max_replicas=getattr(args, "max_replicas", 2),
        replica_gpus=getattr(args, "replica_gpus", 0.0),
        replica_resource=getattr(args, "replica_resource", None),
        stream_resource=getattr(args, "stream_resource", None),
    )
