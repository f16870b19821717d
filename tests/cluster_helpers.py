"""Shared by the cluster tests: a real Ray cluster on this machine (a head and worker node
processes, every port on 127.0.0.1: realtime/cluster/local.py, driven over stdin) and the real
command lines run against it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fesnet.realtime.sample_clip import SAMPLE_CLIP

SAMPLE = SAMPLE_CLIP
RUN_TIMEOUT_S = 400
# The same command line, with ICE on 127.0.0.1 only (as the loopback_ice fixture does
# in-process): the WebRTC server and the remote camera of the server tests.
LOOPBACK_ICE_CLI = (
    "import sys, aioice.ice\n"
    "aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ['127.0.0.1']\n"
    "from fesnet.realtime.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


class ClusterProcess:
    """The local cluster's process (its own session) and its command channel."""

    def __init__(self, workers: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fesnet.realtime.cluster.local", "--workers", str(workers),
             "--client-port", "0", "--commands"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.status = self._answer()
        self.address = self.status["client"]

    def _answer(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        assert line, "the local cluster process ended"
        return json.loads(line)

    def command(self, cmd: str) -> dict[str, Any]:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def ensure_worker(self) -> None:
        if self.command("status")["workers"] == 0:
            self.command("add-worker")

    def close(self) -> None:
        try:
            self.command("quit")
            self.proc.wait(60)
        except Exception:
            pass
        finally:
            if self.proc.poll() is None:  # only this process's own session
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(args: list[str], **kw: Any) -> subprocess.Popen:
    """``fesnet-spot ARGS`` in a process of its own (its own session, so it can be ended)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fesnet.realtime.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw,
    )


def run_cli(args: list[str]) -> subprocess.Popen:
    return cli(["run", "--quiet", *args])


def finish(p: subprocess.Popen, timeout_s: float = RUN_TIMEOUT_S) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"the run hung for {timeout_s} s:\n{out[-2000:]}\n{err[-3000:]}")
    return p.returncode, out, err


def stop(p: subprocess.Popen) -> tuple[str, str]:
    """SIGINT (a server's Ctrl-C), then SIGKILL of its session if it does not end."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        return p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        return p.communicate()


def wait_for_line(p: subprocess.Popen, needle: str) -> None:
    for line in p.stdout:
        if needle in line:
            return
    raise AssertionError(f"the run ended before printing {needle!r}: {p.stderr.read()[-3000:]}")


def wait_for_first_event(p: subprocess.Popen, path: Path, timeout_s: float = 120.0) -> None:
    """Until the stream has emitted its first event (its actor runs and reads frames)."""
    t0 = time.monotonic()
    while not (path.is_file() and path.read_text().strip()):
        assert p.poll() is None, f"the run ended early: {p.stderr.read()[-3000:]}"
        assert time.monotonic() - t0 < timeout_s, "no event from the stream"
        time.sleep(0.2)


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def spotting(evs: list[dict[str, Any]], stream: str | None = None) -> list[dict[str, Any]]:
    """Everything but status events, without what legitimately differs (latency, stream, the
    run's id)."""
    return [
        {k: v for k, v in e.items() if k not in ("latency_ms", "stream", "run")}
        for e in evs
        if e["type"] != "status" and (stream is None or e["stream"] == stream)
    ]


def wait_http(url: str, p: subprocess.Popen, timeout_s: float = 240.0) -> None:
    """Until ``url`` answers at all (any HTTP status), or fail with the server's output."""
    import urllib.error
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if p.poll() is not None:
            out, err = p.communicate()
            pytest.fail(f"the server ended: {out[-2000:]}\n{err[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    stop(p)
    pytest.fail(f"{url} did not answer in {timeout_s} s")


def not_loopback(pid: int) -> list[str]:
    """What a process and its descendants listen on beyond loopback."""
    from fesnet.realtime.cluster.local import is_loopback, listening_sockets, process_tree

    socks = listening_sockets(process_tree(pid))
    return [f"{ip}:{port} {name}" for ip, port, name in socks if not is_loopback(ip)]
