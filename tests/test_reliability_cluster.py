"""Cluster mode as a careless operator meets it (issue 22, items 5, 9, 10 and 13): impossible
and unreachable ``ray://`` addresses, option values Ray would choke on, more replicas than the
cluster can place, replicas that cannot start, ``fesnet-spot cluster`` stopped like a server,
and Ray's own lines kept off the console. Real processes; every cluster here is a real Ray on
127.0.0.1 (tests/cluster_helpers.py); nothing is gated on the clock, only bounded.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from cluster_helpers import (
    SAMPLE,
    ClusterProcess,
    cli,
    finish,
    free_port,
    run_cli,
    wait_for_line,
)
from test_cli import face_clip

from fesnet.realtime.cluster.config import ClusterConfig, ClusterError

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="cluster tests need the [cluster] extra (ray[serve])")
RAY_NOISE = ("Token authentication is enabled", "INFO", "SIGTERM handler is not set",
             "LongPollClient connection failed", "Passing the following kwargs")


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("fesnet-spot: error: ")]


# -- pure rules: what a config asks of a cluster, how the wait for replicas reports -------------
def test_what_a_cluster_cannot_place_is_named() -> None:
    totals = {"CPU": 4.0, "head": 100.0}
    assert ClusterConfig(replicas=2).placement_error(totals, streams=2) is None
    too_many = ClusterConfig(replicas=1000).placement_error(totals, streams=1)
    assert too_many and "1001 CPU (the cluster has 4)" in too_many
    gpus = ClusterConfig(replica_gpus=1.0).placement_error(totals)
    assert gpus and "1 GPU (the cluster has 0)" in gpus
    nowhere = ClusterConfig(replica_resource="model").placement_error(totals)
    assert nowhere and "1 model (the cluster has 0)" in nowhere
    assert ClusterConfig(replicas=0, min_replicas=1).placement_error(totals, streams=3) is None
    with pytest.raises(ClusterError, match="between 1 and 65535"):
        ClusterConfig(address="ray://127.0.0.1:99999")


def test_replicas_that_do_not_start_are_reported_once_with_serves_reason() -> None:
    """The wait for the model tier on a simulated clock: a report after 30 s with Serve's
    reason, once; the wait ends when the application runs; a failed deployment raises."""
    from fesnet.realtime.cluster.placement import await_model_tier

    now = [0.0]
    states = iter([("DEPLOYING", "0 of 2 replica(s) running; waiting for resources")] * 200
                  + [("RUNNING", "2 of 2 replica(s) running")])
    reports: list[tuple[float, str]] = []

    def sleep(s: float) -> None:
        now[0] += s

    await_model_tier(lambda: next(states), lambda m: reports.append((now[0], m)),
                     clock=lambda: now[0], sleep=sleep)
    assert len(reports) == 1 and reports[0][0] == pytest.approx(30.0, abs=0.5)
    assert "not running after 30 s" in reports[0][1] and "waiting for resources" in reports[0][1]
    with pytest.raises(ClusterError, match="replica constructor raised"):
        await_model_tier(lambda: ("DEPLOY_FAILED", "the replica constructor raised"),
                         reports.append, clock=lambda: now[0], sleep=sleep)


# -- items 5, 9, 10: values refused at once, before Ray is imported --------------------------------
OPTION_VALUES = [
    (["run", "--cluster", "ray://127.0.0.1:0"], "between 1 and 65535"),
    (["run", "--cluster", "ray://127.0.0.1:99999"], "between 1 and 65535"),
    (["webrtc-server", "--cluster", "ray://127.0.0.1:70000"], "between 1 and 65535"),
    (["run", "--cluster", "auto", "--max-replicas", "0"], "out of range"),
    (["run", "--cluster", "auto", "--replica-gpus", "-1"], "out of range"),
    (["run", "--cluster", "auto", "--replica-gpus", "nan"], "out of range"),
    (["run", "--cluster", "auto", "--replicas", "0"], "out of range"),
    (["cluster", "--cpus", "-2"], "out of range"), (["cluster", "--cpus", "0"], "out of range"),
    (["cluster", "--client-port", "70000"], "out of range"),
    (["cluster", "--client-port", "-5"], "out of range"),
    (["cluster", "--workers", "-1"], "out of range"),
]


def test_cluster_option_values_are_refused_at_once() -> None:
    """Before: Ray tracebacks (``cluster --cpus -2``, ``--client-port 70000``), accepted
    (``--workers -1``, ``--cpus 0``, ``--max-replicas 0``, ``--replica-gpus nan``), or ~100 s of
    connection attempts to port 0 / 99999. Real processes, all at once: one that starts Ray or
    a cluster at all fails the bound instead of hanging the test session."""
    procs = [(argv, why, cli(argv)) for argv, why in OPTION_VALUES]
    try:
        for argv, why, p in procs:
            code, out, err = finish(p, 90)
            assert code == 2, (argv, out[-1000:], err[-2000:])
            assert "error: argument" in err and why in err and "Traceback" not in err, argv
    finally:
        for _, _, p in procs:
            _reap(p)


def _reap(p: subprocess.Popen) -> None:
    """End ``p``'s whole session if it still runs (a failed assertion must not leave a command,
    or the Ray cluster it started, behind)."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)


# -- item 5: a cluster that is not there -----------------------------------------------------------
@needs_ray
@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("command", ["run", "webrtc-server"])
def test_an_unreachable_cluster_fails_at_once_with_one_line(command: str) -> None:
    """Nothing listens at the port: exit code 1 (a failure, as an unreachable remote-camera
    server), one line. Before: exit code 2 after ~100 s of Ray Client retries."""
    address = f"ray://127.0.0.1:{free_port()}"
    argv = ["run", "--source", str(SAMPLE), "--quiet"] if command == "run" else [command]
    code, _out, err = finish(cli([*argv, "--cluster", address]), 90)
    assert code == 1, err[-2000:]
    assert len(error_lines(err)) == 1 and f"cannot reach the Ray cluster at {address}" in err


@needs_ray
@pytest.mark.cluster
@pytest.mark.slow
def test_ctrl_c_while_waiting_for_a_cluster_that_does_not_answer() -> None:
    """Something accepts the connection and never speaks: Ctrl-C ends the wait with 130 (before:
    ignored for 88 s, then exit code 2). Left alone it would fail after JOIN_TIMEOUT_S."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return
            accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    p = run_cli(["--source", str(SAMPLE), "--cluster",
                 f"ray://127.0.0.1:{server.getsockname()[1]}"])
    try:
        assert accepted.wait(120), "the run never connected"
        p.send_signal(signal.SIGINT)
        code, _out, err = finish(p, 60)
    finally:
        _reap(p)
        server.close()
        for c in held:
            c.close()
    assert code == 130, err[-2000:]
    assert "Traceback" not in err


# -- item 9: fesnet-spot cluster is a server -------------------------------------------------------
@needs_ray
@pytest.mark.cluster
@pytest.mark.slow
def test_sigterm_stops_the_cluster_command_with_0_and_leaves_no_process() -> None:
    """Before: Ray's node handler drained for 30 s and exited 1."""
    p = cli(["cluster", "--workers", "1", "--client-port", "0"])
    try:
        wait_for_line(p, "Ctrl-C stops it")
        session = [q.pid for q in psutil.process_iter() if _sid(q.pid) == p.pid]
        assert len(session) > 3  # the head's and the worker's Ray processes
        p.send_signal(signal.SIGTERM)
        code, _out, err = finish(p, 90)
    finally:
        _reap(p)
    assert code == 0, err[-2000:]
    left = [pid for pid in session if psutil.pid_exists(pid) and _sid(pid) == p.pid]
    assert left == [], [psutil.Process(pid).cmdline() for pid in left]
    assert not any(noise in err for noise in RAY_NOISE), err[-2000:]


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


# -- item 10 and 13: a real cluster, asked for too much, or busy ----------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterProcess]:
    c = ClusterProcess(workers=0)  # the head only: 2 CPUs
    try:
        yield c
    finally:
        c.close()


HOLD = """
import sys, ray
ray.init(sys.argv[1], log_to_driver=False)
holder = ray.remote(num_cpus=float(sys.argv[2]))(type("Holder", (), {"ok": lambda self: 1}))
h = holder.remote()
ray.get(h.ok.remote())
print("held", flush=True)
sys.stdin.readline()
"""


@needs_ray
@pytest.mark.cluster
@pytest.mark.slow
def test_more_replicas_than_the_cluster_has_are_refused(cluster: ClusterProcess) -> None:
    """Before: ``--replicas 1000`` waited forever without a word."""
    code, _out, err = finish(run_cli(["--source", str(SAMPLE), "--cluster", cluster.address,
                                      "--replicas", "1000"]), 120)
    assert code == 2, err[-2000:]
    (line,) = error_lines(err)
    assert "1000 model replica(s) and 1 stream(s) cannot be placed" in line and "CPU" in line
    assert not any(noise in err for noise in RAY_NOISE), err[-2000:]


@needs_ray
@pytest.mark.cluster
@pytest.mark.slow
def test_replicas_that_cannot_start_are_reported_and_ctrl_c_ends_the_wait(
    cluster: ClusterProcess, tmp_path: Path
) -> None:
    """Another client holds every CPU of the cluster: the replica can be placed but not
    started. The run says so (with Serve's reason) after 30 s instead of waiting silently, and
    Ctrl-C ends the wait with 130."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, cluster.address, "2"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        p = run_cli(["--source", str(SAMPLE), "--cluster", cluster.address])
        try:
            report = _first_line_with(p, "model tier is not running after 30 s", timeout_s=300)
            assert "0 of 1 replica(s) running" in report and "Ctrl-C" in report
            p.send_signal(signal.SIGINT)
            code, _out, err = finish(p, 60)
            assert code == 130, err[-2000:]
        finally:
            _reap(p)
    finally:
        try:  # a client that leaves frees its actor at once (a killed one after a grace period)
            holder.communicate("\n", timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(30)


def _first_line_with(p: subprocess.Popen, needle: str, timeout_s: float) -> str:
    """The first stderr line of ``p`` holding ``needle``, read on a helper thread so a run that
    never prints it fails the bound instead of blocking the test."""
    found: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            if needle in line:
                found.append(line)
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(timeout_s):
        pytest.fail(f"no line with {needle!r} within {timeout_s} s")
    assert found, f"the run ended without a line with {needle!r}"
    return found[0]


@needs_ray
@pytest.mark.cluster
@pytest.mark.slow
def test_a_cluster_run_prints_none_of_rays_own_lines(
    cluster: ClusterProcess, tmp_path: Path
) -> None:
    """Before: Ray Client's forwarded-kwargs INFO line, Serve's INFO lines and the long-poll
    client's "connection failed" at the end, around our own output."""
    clip = face_clip(tmp_path / "face.mp4")
    code, out, err = finish(run_cli(["--source", str(clip), "--cluster", cluster.address]))
    assert code == 0, err[-2000:]
    assert "frames " in out
    assert not any(noise in err for noise in RAY_NOISE), err[-2000:]
