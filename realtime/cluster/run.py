"""``fesnet-spot run`` with several sources or ``--cluster``: the sources, what such a run
refuses, and the streams on Ray (called by realtime/cli.py, which runs every kind of run with
the same sinks, stop rules, summary and exit codes).

    fesnet-spot run --source a.mp4 --source rtsp://cam2/stream --events out.jsonl
    fesnet-spot run --sources cameras.txt --cluster ray://10.0.0.5:10001 --replicas 2

Events of every stream go to one JSONL file and the console, each tagged with its ``stream``
(``s0``, ``s1``, ... in the order given).
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from fesnet.realtime.source_list import read_source_list

from .config import ClusterConfig
from .streams import drive_actors, spawn, stream_names

SINGLE_ONLY = ("plot", "video_out", "calibrate", "profile")
"""Options of a run of one source in this process only (``--truth`` takes one source)."""


def source_specs(args: argparse.Namespace) -> list[str]:
    """Every ``--source``, then the lines of ``--sources`` FILE (a ValueError when it cannot
    be used: realtime/source_list.py)."""
    specs = list(args.source or [])
    if args.sources is not None:
        specs += read_source_list(args.sources)
    return specs


def check_args(args: argparse.Namespace, specs: list[str]) -> None:
    """Refuse what a multi-stream run cannot do (a ValueError the CLI prints as usage)."""
    if args.truth is not None and len(specs) > 1:
        raise ValueError("--truth is the ground truth of one source: give one --source")
    used = [f"--{n.replace('_', '-')}" for n in SINGLE_ONLY if getattr(args, n, None)]
    if used:
        raise ValueError(f"{', '.join(used)} work with one in-process source only "
                         "(not with several sources or --cluster)")
    if args.engine != "cached":
        raise ValueError("--engine naive works with one in-process source only")
    if not specs:
        raise ValueError("no sources given")


def run_on_cluster(
    cfg: ClusterConfig,
    tier: Any,
    runtime: Any,
    specs: list[str],
    pace: str,
    sinks: list[Any],
    control: Any,
) -> list[Any]:
    """Every source in a stream actor of its own, calling the model tier ``tier`` that the
    runtime loader placed; events to ``sinks`` (each failing on its own) until every stream has
    ended or ``control`` stops the run. Returns each stream's result."""
    from fesnet.model.backends import split_post
    from fesnet.realtime.sinks import Fanout

    _, post = split_post(runtime.backend)
    actors = {
        stream: spawn(cfg, tier, spec, stream, runtime.stride_frames, pace, runtime.merger,
                      runtime.serving, post)
        for stream, spec in zip(stream_names(specs), specs, strict=True)
    }
    replicas = "autoscaled" if cfg.autoscale else str(cfg.replicas)
    where = "on the model tier" if runtime.serving == "tier" else "stateless"
    print(f"spotting {len(actors)} streams on Ray ({cfg.address}): one actor per stream, "
          f"{replicas} model replica(s) with {runtime.backend.name}, {where}",
          flush=True)
    stop = threading.Event()
    control.on_stop(stop.set)
    t0 = time.monotonic()
    with control.signals():
        results = drive_actors(actors, Fanout(sinks, "the cluster run"), stop)
    for res in results:
        if res.summary is not None and not res.summary.get("wall_s"):
            res.summary["wall_s"] = time.monotonic() - t0
    return results
