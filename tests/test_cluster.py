"""Cluster mode against a real Ray cluster on this machine: a head and a worker node, each its own
Ray processes, every port on 127.0.0.1 (realtime/cluster/local.py, driven over stdin).

Same events as in-process (same checkpoint, the sample clip, file pace), also for a network that
reads the geometry channel; every socket the cluster listens on is on loopback; and faults
mid-run: a model replica SIGKILLed, the worker node holding the model tier SIGKILLed (then a
node comes back, as a supervisor would bring it), the worker node holding a stream SIGKILLed.
Runs go through the real CLI with ``--cluster ray://127.0.0.1:PORT``.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="cluster tests need the [cluster] extra (ray[serve])")

from cluster_helpers import (
    SAMPLE,
    ClusterProcess,
    events,
    finish,
    run_cli,
    spotting,
    wait_for_first_event,
    wait_for_line,
)
from test_reliability_media import assert_paired as assert_paired_events

from fesnet.realtime.types import SpotEvent


def assert_paired(evs: list[dict[str, Any]]) -> None:
    assert_paired_events([SpotEvent(**{k: v for k, v in e.items() if k != "run"}) for e in evs])

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterProcess]:
    c = ClusterProcess(workers=1)
    try:
        yield c
    finally:
        c.close()


def _reference(path: Path, checkpoint: Path | None = None) -> list[dict[str, Any]]:
    extra = ["--checkpoint", str(checkpoint)] if checkpoint else []
    code, _out, err = finish(run_cli(["--source", str(SAMPLE), "--events", str(path), *extra]))
    assert code == 0, err[-3000:]
    evs = spotting(events(path))
    assert any(e["type"] == "expression" for e in evs), "nothing to compare"
    return evs


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The in-process events of the sample clip (file pace: every frame)."""
    return _reference(tmp_path_factory.mktemp("ref") / "events.jsonl")


@pytest.fixture(scope="module")
def geometry_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A network with a geometry channel whose weights matter, so a window scored without the
    right ``geom`` would score differently: the shipped one when it reads the channel (trained),
    else the shipped one with a seeded channel added."""
    import torch

    from fesnet.model import checkpoint as ckpt_mod
    from fesnet.model.geometry import GeometryConfig
    from fesnet.model.head import with_geometry

    base = ckpt_mod.load(None)
    if base.net.cfg.geometry_dims:
        return base.path
    net = with_geometry(base.net)
    torch.manual_seed(0)
    with torch.no_grad():
        w = net.mtam.inp.weight  # (F, C_in + hidden, 1): the geometry columns start at zero
        cols = w.shape[1] - base.net.mtam.inp.weight.shape[1]
        w[:, -cols:] = 0.05 * torch.randn_like(w[:, -cols:])
    meta = {"merger": base.merger, "geometry": GeometryConfig().to_dict()}
    return ckpt_mod.save(tmp_path_factory.mktemp("geom") / "geom.pt", net, meta)


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Merger settings under which an interval opens at once and stays open until the clip
    ends: the shipped checkpoint's p_expr = p_ME + p_MaE stays above 0.001 all through the
    sample clip (one interval, onset to the end). At 0.05 the 40-minute head closed and
    reopened 17 intervals there, so a kill could land between two and find nothing to
    interrupt."""
    path = tmp_path_factory.mktemp("busy") / "busy.json"
    path.write_text(json.dumps({"on_threshold": 0.002, "off_threshold": 0.001,
                                "max_expression_s": 60.0}))
    return path


def _interval_open(path: Path) -> bool:
    """The newest expression event is an onset: an interval is open now. Not merely "an onset
    was written": on a starved machine a late source restarts the timeline ("source gap ...;
    timeline restarted"), which closes the interval, and a kill landing before the next onset
    finds nothing to interrupt."""
    if not path.is_file():
        return False
    whole = path.read_text().split("\n")[:-1]  # the last piece may be a line being written
    states = [e.get("state") for e in map(json.loads, whole) if e.get("type") == "expression"]
    return bool(states) and states[-1] == "onset"


def wait_for_onset(p, path: Path, timeout_s: float = 180.0) -> None:
    """Until an interval is open (the newest expression event an onset)."""
    t0 = time.monotonic()
    while not _interval_open(path):
        assert p.poll() is None, f"the run ended early: {p.stderr.read()[-3000:]}"
        assert time.monotonic() - t0 < timeout_s, "no onset from the stream"
        time.sleep(0.2)


def test_two_streams_on_the_cluster_give_the_in_process_events(cluster, reference, tmp_path):
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--source", str(SAMPLE), "--events", str(path),
                 "--cluster", cluster.address, "--replicas", "2"])
    wait_for_line(p, "spotting 2 streams on Ray")
    wait_for_first_event(p, path)
    # Two replicas deployed and streams running: every socket of every Ray process of the
    # cluster (GCS, raylets, agents, Ray Client server, Serve controller, both replicas, the
    # stream actors) is on loopback.
    listening = cluster.command("status")
    assert listening["listening"] > 5 and listening["not_loopback"] == []
    code, out, err = finish(p)
    assert code == 0, err[-3000:]
    evs = events(path)
    assert spotting(evs, "s0") == reference
    assert spotting(evs, "s1") == reference
    # Crops up, probabilities down: each stream's features live on its replica.
    kib = float(re.search(r"wire\s+([0-9.]+) KiB per source frame", out).group(1))
    assert kib <= 40.0, out[-2000:]


def test_the_geometry_channel_crosses_the_wire(cluster, geometry_checkpoint, tmp_path):
    """A network that reads ``geom``: the replica gets each window's geometry (the in-process
    and cluster events agree, regions included), and its backend says it reads the channel."""
    ref = _reference(tmp_path / "ref.jsonl", geometry_checkpoint)
    assert any(e.get("regions") for e in ref), "final events of a geometry network name regions"
    path = tmp_path / "events.jsonl"
    code, _out, err = finish(run_cli([
        "--source", str(SAMPLE), "--events", str(path), "--checkpoint", str(geometry_checkpoint),
        "--cluster", cluster.address, "--replicas", "1",
    ]))
    assert code == 0, err[-3000:]
    assert spotting(events(path)) == ref


def test_killing_the_only_replica_mid_run_loses_and_repeats_nothing(cluster, reference, tmp_path):
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--events", str(path),
                 "--cluster", cluster.address, "--replicas", "1"])
    wait_for_line(p, "spotting")
    wait_for_first_event(p, path)
    time.sleep(2.0)
    assert cluster.command("kill-replicas")["killed_pids"]
    code, _out, err = finish(p)
    assert code == 0, err[-3000:]
    evs = events(path)
    assert spotting(evs) == reference  # nothing lost, nothing twice
    gaps = [e for e in evs if e["type"] == "status" and "model tier" in e["message"]]
    assert gaps, f"the replica's loss did not show as a status event: {err[-2000:]}"
    # the restarted replica held nothing of the stream: its ring was rebuilt, and said so
    assert any("rebuilt" in e["message"] for e in gaps), gaps


def test_losing_the_model_node_mid_run_the_stream_carries_on(cluster, reference, tmp_path):
    """Replicas only on the worker node, the stream on the head: SIGKILL the worker node, then a
    node comes back (as a supervisor or autoscaler would bring one); the stream waits, its
    calls are re-sent, and its events are the in-process ones."""
    cluster.ensure_worker()
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--events", str(path),
                 "--cluster", cluster.address, "--replicas", "1",
                 "--replica-resource", "worker", "--stream-resource", "head"])
    wait_for_line(p, "spotting")
    wait_for_first_event(p, path)
    time.sleep(2.0)
    assert "killed_node" in cluster.command("kill-worker")
    time.sleep(2.0)
    assert "node_id" in cluster.command("add-worker")
    code, _out, err = finish(p)
    assert code == 0, err[-3000:]
    evs = events(path)
    assert spotting(evs) == reference
    assert any(e["type"] == "status" and "model tier" in e["message"] for e in evs)
    assert any(e["type"] == "status" and "rebuilt" in e["message"] for e in evs)


def test_a_stream_whose_node_dies_ends_with_a_clear_error(cluster, busy, tmp_path):
    """The stream's actor on the worker node, the model on the head: SIGKILL the worker node
    while an interval is open. The run ends (no hang) with exit code 1, one error line naming
    the stream, the stream's summary as last seen, its open interval closed as
    ``interrupted`` and a status event (before: InvalidStateError tracebacks, the error line
    twice, an empty summary, the interval never closed)."""
    cluster.ensure_worker()
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--events", str(path), "--merger-config", str(busy),
                 "--pace", "live", "--cluster", cluster.address, "--replicas", "1",
                 "--replica-resource", "head", "--stream-resource", "worker"])
    wait_for_line(p, "spotting")
    wait_for_onset(p, path)
    assert "killed_node" in cluster.command("kill-worker")
    code, out, err = finish(p)
    assert code == 1
    assert "Traceback" not in err and "InvalidStateError" not in err, err[-3000:]
    # Only the CLI's own error lines count: a "joining ... failed; trying again" warning from a
    # Ray Client server that was slow to start on a loaded machine is a retry, not an error.
    errors = [line for line in err.splitlines() if line.startswith("fesnet-spot: error:")]
    assert len(errors) == 1 and "stream s0" in errors[0] and "actor died" in errors[0], err
    assert not any("error" in line.lower() for line in err.splitlines()
                   if line not in errors and "trying again" not in line), err
    assert "[s0]" in out and "frames      " in out and "stopped early" in out  # its summary
    evs = events(path)
    assert evs[-1]["type"] == "status" and "actor died" in evs[-1]["message"]
    assert_paired(evs)
    assert any(e.get("state") == "interrupted" for e in evs)
    cluster.command("add-worker")


def test_a_full_disk_on_the_cluster_is_exit_3_with_the_summary(cluster):
    """``--events /dev/full`` on Ray: one line, exit 3, the summary (before: an OutputError
    traceback, exit 1, no summary)."""
    code, out, err = finish(run_cli(["--source", str(SAMPLE), "--events", "/dev/full",
                                     "--cluster", cluster.address, "--replicas", "1"]))
    assert code == 3, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("fesnet-spot: error:")]
    assert len(errors) == 1 and "cannot write events to /dev/full" in errors[0], err[-3000:]
    assert "[s0]" in out and "frames      " in out and "(0 written" in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_cluster_run_says_so_and_closes_its_interval(cluster, busy, tmp_path, signum):
    """SIGINT / SIGTERM while a stream on Ray has an interval open: 128 + N, the summary, the
    interval closed as ``interrupted`` (before: exit 0)."""
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--events", str(path), "--merger-config", str(busy),
                 "--pace", "live", "--cluster", cluster.address, "--replicas", "1"])
    wait_for_line(p, "spotting")
    wait_for_onset(p, path)
    p.send_signal(signum)
    code, out, err = finish(p)
    assert code == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    assert "[s0]" in out and "stopped early" in out
    evs = events(path)
    assert_paired(evs)
    assert any(e.get("state") == "interrupted" for e in evs)


def test_the_sample_clip_on_the_cluster_is_compared_with_its_truth(cluster, reference):
    """No ``--source`` on Ray: the bundled sample clip, and its F1 table, as in-process."""
    from fesnet.realtime.reporting import compare_with_truth, format_comparison, read_truth

    code, out, err = finish(run_cli(["--cluster", cluster.address, "--replicas", "1"]))
    assert code == 0, err[-3000:]
    truth = read_truth(SAMPLE.with_name("sample_truth.json"))
    # ``reference``: the in-process events, their stream and latency left out
    in_process = [SpotEvent(stream="0", **e) for e in reference]
    expected = format_comparison(compare_with_truth(in_process, truth))
    assert "compared with the ground truth" in out and expected in out


def test_a_bad_cluster_address_is_a_usage_error(tmp_path):
    p = run_cli(["--source", str(SAMPLE), "--cluster", "10.0.0.5"])
    code, _out, err = finish(p, 60)
    assert code == 2 and "ray://HOST:PORT" in err
