"""SIGTERM to a command that runs its own private Ray (``--cluster auto``), at each moment of its
life (issue 22, item 2): while Ray starts (the raylet starting its agents), while the model
tier deploys (Serve's controller up), and while it runs. ``run`` ends with 143, its summary and
its open interval closed as ``interrupted``; a server ends with 0 (143 when stopped before it
serves, as an in-process server); never Ray's exit code 15, its C++ "*** SIGTERM received"
dump (134) or its 30 s drain; and no process of that Ray is left behind, not even the agents
its raylet started (they used to live on for minutes, re-parented to init).

The rule under it is pure and fast (``exitcodes.stop_signals_raise``: a stop signal that
reaches a library's handler inside the block still stops it). The commands are real processes
on 127.0.0.1; each moment is seen in the process tree (no timing); every process a test saw is
ended by the test whatever its assertions say.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from cluster_helpers import SAMPLE, cli, finish, free_port, wait_http

from fesnet.realtime import exitcodes

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="cluster tests need the [cluster] extra (ray[serve])")


def on_ray(test: Callable[..., None]) -> Callable[..., None]:
    """A test that starts a private Ray in a command of its own (slow)."""
    return needs_ray(pytest.mark.cluster(pytest.mark.slow(test)))


WATCH_S = 400.0  # the bound on reaching a moment (a loaded 2-core machine starts Ray slowly)
RAY_ABORT = ("SIGTERM received", "Traceback", "Draining")


# -- the rule: a stop signal inside the block stops it, whoever's handler it reached --------------
def test_a_stop_signal_reaching_a_librarys_handler_still_stops_the_block() -> None:
    """``ray.init`` sets SIGTERM to ``sys.exit(15)`` while it starts; a library may also just
    swallow it. Either way the block ends as with the command's handler (Stopped, exit code
    143), and the handlers in force before are back (before: SystemExit(15), a run that
    ended silently with 15; a swallowed signal was lost)."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    for library_handler in (lambda signum, _frame: sys.exit(signum), lambda *_: None):
        with pytest.raises(exitcodes.Stopped), exitcodes.stop_signals_raise():
            signal.signal(signal.SIGTERM, library_handler)
            signal.raise_signal(signal.SIGTERM)
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with pytest.raises(KeyboardInterrupt), exitcodes.stop_signals_raise():
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.raise_signal(signal.SIGINT)
    with exitcodes.stop_signals_raise():  # no signal: the block ends as it would
        signal.signal(signal.SIGTERM, lambda *_: None)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# -- the commands, on a private Ray -------------------------------------------------------------
def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return ""


class Tree:
    """Every process a command started, directly or not, as seen while it ran (psutil handles
    compare creation times, so a reused pid is never taken for one of them)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.seen: dict[int, psutil.Process] = {}

    def look(self) -> list[str]:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        for c in children:
            self.seen.setdefault(c.pid, c)
        return [_cmdline(c) for c in children]

    def wait_for(self, ready: Callable[[list[str]], bool], what: str) -> None:
        t0 = time.monotonic()
        while not ready(self.look()):
            if self.proc.poll() is not None:
                _out, err = self.proc.communicate()
                pytest.fail(f"the command ended before {what}: {err[-3000:]}")
            if time.monotonic() - t0 > WATCH_S:
                pytest.fail(f"not {what} within {WATCH_S:g} s")
            time.sleep(0.05)

    def alive(self) -> list[str]:
        out = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{p.pid} (parent {p.ppid()}): {_cmdline(p)[:90]}")
            except psutil.Error:
                continue
        return out

    def end(self) -> None:
        """SIGKILL the command's session and every process of it still alive (a failed
        assertion must leave nothing running)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate(timeout=30)
        for p in self.seen.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.Error:
                continue


@pytest.fixture
def tree_of() -> Iterator[Callable[[subprocess.Popen], Tree]]:
    trees: list[Tree] = []

    def make(proc: subprocess.Popen) -> Tree:
        trees.append(Tree(proc))
        return trees[-1]

    yield make
    for t in trees:
        t.end()


def agents_starting(cmdlines: list[str]) -> bool:
    """Inside ray.init: an agent the raylet started has named itself (Ray's own SIGTERM
    handler is in force in the command until ray.init returns; the agents orphaned here)."""
    return any(c.startswith("ray::RuntimeEnvAgent") for c in cmdlines)


def tier_deploying(cmdlines: list[str]) -> bool:
    """ray.init has returned and Serve is deploying the model tier (Ray's C++ failure handler
    was in force here: a SIGTERM aborted the command with a stack dump)."""
    return any("ServeController" in c for c in cmdlines)


def _stopped(tree: Tree, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
    tree.proc.send_signal(signum)
    code, out, err = finish(tree.proc, 120)
    assert not any(noise in err for noise in RAY_ABORT), err[-3000:]
    assert tree.alive() == [], tree.alive()
    return code, out, err


@on_ray
@pytest.mark.parametrize("moment", [agents_starting, tier_deploying],
                         ids=["ray-starting", "tier-deploying"])
def test_sigterm_while_a_run_starts_its_ray_is_143_and_leaves_no_process(
    tree_of: Callable[[subprocess.Popen], Tree], moment: Callable[[list[str]], bool]
) -> None:
    """Before: exit code 15 without a word while Ray started, and its DashboardAgent and
    RuntimeEnvAgent orphaned for minutes; 134 and Ray's C++ dump while the tier deployed."""
    tree = tree_of(cli(["run", "--source", str(SAMPLE), "--quiet", "--cluster", "auto"]))
    tree.wait_for(moment, moment.__name__.replace("_", " "))
    code, _out, err = _stopped(tree)
    assert code == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "fesnet-spot: stopped by signal 15", err[-3000:]


@on_ray
def test_sigterm_while_a_run_on_its_ray_spots_is_143_with_the_interval_closed(
    tree_of: Callable[[subprocess.Popen], Tree], tmp_path: Path
) -> None:
    busy = tmp_path / "busy.json"
    busy.write_text(json.dumps({"on_threshold": 0.05, "off_threshold": 0.05,
                                "max_expression_s": 60.0}))
    path = tmp_path / "events.jsonl"
    tree = tree_of(cli(["run", "--source", str(SAMPLE), "--quiet", "--pace", "live", "--events",
                        str(path), "--merger-config", str(busy), "--cluster", "auto"]))
    tree.wait_for(lambda _: path.is_file() and '"state":"onset"' in path.read_text(),
                  "an interval open")
    code, out, err = _stopped(tree)
    assert code == 143, err[-3000:]
    assert "[s0]" in out and "stopped early" in out
    states = [json.loads(line).get("state") for line in path.read_text().splitlines()]
    assert states.count("onset") == states.count("interrupted") + states.count("final") > 0


SERVERS = ["serve", "webrtc-server"]


@on_ray
@pytest.mark.parametrize("command", SERVERS)
def test_sigterm_stops_a_server_on_its_ray_with_0_and_leaves_no_process(
    tree_of: Callable[[subprocess.Popen], Tree], command: str
) -> None:
    """Before: ``serve`` ended with Ray's exit code 15 (its start-up handler was put back after
    the tier deployed); ``webrtc-server`` aborted (134) when stopped while the tier deployed."""
    port = free_port()
    tree = tree_of(cli([command, "--port", str(port), "--cluster", "auto"]))
    wait_http(f"http://127.0.0.1:{port}/", tree.proc, WATCH_S)
    tree.look()
    code, _out, err = _stopped(tree)
    assert code == 0, err[-3000:]


@on_ray
def test_sigterm_while_a_server_deploys_its_tier_is_143_and_leaves_no_process(
    tree_of: Callable[[subprocess.Popen], Tree],
) -> None:
    tree = tree_of(cli(["webrtc-server", "--port", str(free_port()), "--cluster", "auto"]))
    tree.wait_for(tier_deploying, "the tier deploying")
    code, _out, err = _stopped(tree)
    assert code == 143, err[-3000:]
    assert "fesnet-spot: stopped by signal 15" in err
