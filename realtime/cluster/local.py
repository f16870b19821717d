"""A real multi-process Ray cluster on this machine, loopback only (``fesnet-spot cluster``).

A head node and ``workers`` worker nodes, each its own set of Ray processes (GCS on the head, a
raylet and its workers per node), all at 127.0.0.1 in Ray's single-machine mode
(placement.py: :func:`~fesnet.realtime.cluster.placement.loopback_only`). The Ray Client port is
printed: point ``--cluster ray://127.0.0.1:PORT`` at it. Built on ``ray.cluster_utils.Cluster``,
Ray's own tool for multi-node clusters on one machine (``ray start`` refuses to add a worker
node in single-machine mode).

Run as a process it reads commands on stdin, one per line, and answers each with one JSON line:
``status``, ``kill-worker`` (SIGKILL every process of the newest worker node, as a machine
that vanishes), ``add-worker``, ``kill-replicas`` (SIGKILL every model replica process),
``quit``. The tests drive a cluster this way.

It is a server: SIGINT or SIGTERM shuts every node down and ends it with exit code 0. Each Ray
node installs its own SIGTERM handler (a drain of up to 30 s, then exit 1); the command's is put
back after each node starts (``exitcodes.stop_signals_raise``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
import time
from typing import Any

import psutil

from fesnet.argtypes import int_range
from fesnet.model.third_party_logs import quiet_ray
from fesnet.realtime import exitcodes

from .placement import LOOPBACK, loopback_only

CLUSTER_CPUS = 2
OBJECT_STORE_MB = 150
MAX_WORKERS = 16  # worker nodes on one machine: each is a raylet and its worker processes
MAX_CPUS = 1024  # logical CPUs a node may offer


class LocalCluster:
    def __init__(
        self,
        workers: int = 1,
        cpus_per_node: int = CLUSTER_CPUS,
        object_store_mb: int = OBJECT_STORE_MB,
        client_port: int = 0,
    ) -> None:
        self.n_workers = workers
        self.cpus = cpus_per_node
        self.object_store = object_store_mb * 2**20
        self.client_port = client_port or _free_port()
        self.cluster: Any = None
        self.workers: list[Any] = []

    def start(self) -> LocalCluster:
        loopback_only()
        from ray.cluster_utils import Cluster

        with exitcodes.stop_signals_raise(), quiet_ray():  # each node sets its SIGTERM handler
            self.cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": self.cpus,
                    "object_store_memory": self.object_store,
                    "include_dashboard": False,
                    "ray_client_server_port": self.client_port,
                    "resources": {"head": 100},
                },
            )
        for _ in range(self.n_workers):
            self.add_worker()
        return self

    def add_worker(self) -> dict[str, Any]:
        with exitcodes.stop_signals_raise(), quiet_ray():
            node = self.cluster.add_node(
                num_cpus=self.cpus,
                object_store_memory=self.object_store,
                include_dashboard=False,
                resources={"worker": 100},
            )
        self.workers.append(node)
        return {"node_id": node.node_id, "raylet_pid": _raylet_pid(node)}

    def kill_worker(self) -> dict[str, Any]:
        """SIGKILL the newest worker node's processes (no graceful drain)."""
        if not self.workers:
            return {"error": "no worker node left"}
        node = self.workers.pop()
        node_id = node.node_id
        self.cluster.remove_node(node, allow_graceful=False)
        return {"killed_node": node_id}

    def kill_replicas(self) -> dict[str, Any]:
        """SIGKILL every model replica process (with one replica: the model tier is gone until
        Serve has started a new one)."""
        replicas = [p for p in _session_processes() if "ServeReplica" in _name(p)]
        if not replicas:
            return {"error": "no replica process found"}
        for p in replicas:
            p.send_signal(signal.SIGKILL)
        return {"killed_pids": [p.pid for p in replicas]}

    def status(self) -> dict[str, Any]:
        sockets = listening_sockets([psutil.Process(), *_session_processes()])
        return {
            "gcs": self.cluster.address,
            "client": f"ray://{LOOPBACK}:{self.client_port}",
            "workers": len(self.workers),
            "listening": len(sockets),
            "not_loopback": [f"{ip}:{port} {name}" for ip, port, name in sockets
                             if not is_loopback(ip)],
        }

    def shutdown(self) -> None:
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _raylet_pid(node: Any) -> int | None:
    info = node.all_processes.get("raylet") if hasattr(node, "all_processes") else None
    return info[0].process.pid if info else None


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return ""


def _session_processes() -> list[psutil.Process]:
    """Every process in this process's session: the cluster's own processes."""
    sid = os.getsid(0)
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and os.getsid(p.pid) == sid:
                out.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return out


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def listening_sockets(processes: list[psutil.Process]) -> list[tuple[str, int, str]]:
    """(address, port, process) of every TCP/UDP socket these processes listen or wait on."""
    out = []
    for p in processes:
        try:
            conns = p.net_connections(kind="inet")
            name = _name(p)[:80]
        except psutil.Error:
            continue
        for c in conns:
            # A listening TCP socket, or a UDP socket bound without a peer (it receives).
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr):
                out.append((c.laddr.ip, c.laddr.port, name))
    return sorted(set(out))


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (what ``ray.init`` started under a driver)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


COMMANDS = {"status", "kill-worker", "add-worker", "kill-replicas", "quit"}


def serve_commands(cluster: LocalCluster, stdin: Any = sys.stdin) -> None:
    print(json.dumps(cluster.status()), flush=True)
    for line in stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "kill-worker":
            out = cluster.kill_worker()
        elif cmd == "add-worker":
            out = cluster.add_worker()
        elif cmd == "kill-replicas":
            out = cluster.kill_replicas()
        elif cmd == "status":
            out = cluster.status()
        else:
            out = {"error": f"unknown command {cmd!r}; one of {sorted(COMMANDS)}"}
        print(json.dumps(out), flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int_range(0, MAX_WORKERS), default=1,
                        help=f"worker node processes (0-{MAX_WORKERS})")
    parser.add_argument("--cpus", type=int_range(1, MAX_CPUS), default=CLUSTER_CPUS,
                        help=f"logical CPUs each node offers (1-{MAX_CPUS})")
    parser.add_argument("--client-port", type=int_range(0, 65535), default=10001,
                        help="Ray Client port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--commands", action="store_true",
                        help="read commands on stdin (tests): status, kill-worker, "
                        "add-worker, kill-replicas, quit")


def run(args: argparse.Namespace) -> int:
    cluster = LocalCluster(args.workers, args.cpus, client_port=args.client_port).start()
    try:
        if args.commands:
            serve_commands(cluster)
        else:
            st = cluster.status()
            where = "127.0.0.1 only" if not st["not_loopback"] else st["not_loopback"]
            print(f"Ray cluster on this machine: a head and {args.workers} worker node(s), "
                  f"listening on {where}")
            print(f"point a server at it:  fesnet-spot webrtc-server --cluster {st['client']}")
            print("Ctrl-C stops it", flush=True)
            while True:
                time.sleep(3600)
    except (KeyboardInterrupt, exitcodes.Stopped):
        pass
    finally:
        cluster.shutdown()
    return exitcodes.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fesnet.realtime.cluster.local")
    add_arguments(parser)
    signal.signal(signal.SIGTERM, exitcodes.raise_stopped)  # a server: SIGTERM ends it as Ctrl-C
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
