"""Cluster mode against a real Ray cluster on this machine: a head and a worker node, each its own
Ray processes, every port on 127.0.0.1 (realtime/cluster/local.py, driven over stdin).

Same events as in-process (same checkpoint, the sample clip, file pace), also for a network that
reads the geometry channel; every socket the cluster listens on is on loopback; and faults
mid-run: a model replica SIGKILLed, the worker node holding the model tier SIGKILLed (then a
node comes back, as a supervisor would bring it), the worker node holding a stream SIGKILLed.
Runs go through the real CLI with ``--cluster ray://127.0.0.1:PORT``.
"""

from __future__ import annotations

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


def test_two_streams_on_the_cluster_give_the_in_process_events(cluster, reference, tmp_path):
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--source", str(SAMPLE), "--events", str(path),
                 "--cluster", cluster.address, "--replicas", "2"])  # fmt: skip
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
    assert "KiB per source frame" in out


def test_the_geometry_channel_crosses_the_wire(cluster, geometry_checkpoint, tmp_path):
    """A network that reads ``geom``: the replica gets each window's geometry (the in-process
    and cluster events agree, regions included), and its backend says it reads the channel."""
    ref = _reference(tmp_path / "ref.jsonl", geometry_checkpoint)
    assert any(e.get("regions") for e in ref), "final events of a geometry network name regions"
    path = tmp_path / "events.jsonl"
    code, _out, err = finish(run_cli([
        "--source", str(SAMPLE), "--events", str(path), "--checkpoint", str(geometry_checkpoint),
        "--cluster", cluster.address, "--replicas", "1",
    ]))  # fmt: skip
    assert code == 0, err[-3000:]
    assert spotting(events(path)) == ref


def test_killing_the_only_replica_mid_run_loses_and_repeats_nothing(cluster, reference, tmp_path):
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--events", str(path),
                 "--cluster", cluster.address, "--replicas", "1"])  # fmt: skip
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


def test_losing_the_model_node_mid_run_the_stream_carries_on(cluster, reference, tmp_path):
    """Replicas only on the worker node, the stream on the head: SIGKILL the worker node, then a
    node comes back (as a supervisor or autoscaler would bring one); the stream waits, its
    calls are re-sent, and its events are the in-process ones."""
    cluster.ensure_worker()
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--events", str(path),
                 "--cluster", cluster.address, "--replicas", "1",
                 "--replica-resource", "worker", "--stream-resource", "head"])  # fmt: skip
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


def test_a_stream_whose_node_dies_ends_with_a_clear_error(cluster, tmp_path):
    """The stream's actor on the worker node, the model on the head: SIGKILL the worker node.
    The run ends (no hang) with exit code 1, an error naming the stream and a status event."""
    cluster.ensure_worker()
    path = tmp_path / "events.jsonl"
    p = run_cli(["--source", str(SAMPLE), "--events", str(path),
                 "--cluster", cluster.address, "--replicas", "1",
                 "--replica-resource", "head", "--stream-resource", "worker"])  # fmt: skip
    wait_for_line(p, "spotting")
    wait_for_first_event(p, path)
    time.sleep(2.0)
    assert "killed_node" in cluster.command("kill-worker")
    code, _out, err = finish(p)
    assert code == 1
    assert "stream s0" in err and "actor died" in err
    evs = events(path)
    assert evs[-1]["type"] == "status" and "actor died" in evs[-1]["message"]
    cluster.command("add-worker")


def test_a_bad_cluster_address_is_a_usage_error(tmp_path):
    p = run_cli(["--source", str(SAMPLE), "--cluster", "10.0.0.5"])
    code, _out, err = finish(p, 60)
    assert code == 2 and "ray://HOST:PORT" in err
