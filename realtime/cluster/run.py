"""``fesnet-spot run`` with several sources, or with ``--cluster`` (called by realtime/cli.py).

    fesnet-spot run --source a.mp4 --source rtsp://cam2/stream --events out.jsonl
    fesnet-spot run --sources cameras.txt --cluster ray://10.0.0.5:10001 --replicas 2

Events of every stream go to one JSONL file and the console, each tagged with its ``stream``
(``s0``, ``s1``, ... in the order given). Exit code 1 when any stream failed (its error is
printed), 0 when all ended normally.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ClusterConfig, cluster_config
from .streams import drive_actors, spawn, stream_names
from .wire import WireStats

SINGLE_ONLY = ("truth", "plot", "video_out", "calibrate", "profile")


def read_sources(path: Path) -> list[str]:
    """One source per line; blank lines and ``#`` comments skipped."""
    lines = Path(path).read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def source_specs(args: argparse.Namespace) -> list[str]:
    """Every ``--source``, then the lines of ``--sources`` FILE."""
    specs = list(args.source or [])
    if args.sources is not None:
        try:
            specs += read_sources(args.sources)
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read --sources {args.sources}: {e}") from e
    return specs


def check_args(args: argparse.Namespace, specs: list[str]) -> None:
    """Refuse what a multi-stream run cannot do (a ValueError the CLI prints as usage)."""
    used = [f"--{n.replace('_', '-')}" for n in SINGLE_ONLY if getattr(args, n, None)]
    if used:
        raise ValueError(f"{', '.join(used)} work with one in-process source only "
                         "(not with several sources or --cluster)")  # fmt: skip
    if args.engine != "cached":
        raise ValueError("--engine naive works with one in-process source only")
    if not specs:
        raise ValueError("no sources given")


def cmd_run_many(
    args: argparse.Namespace, specs: list[str], format_summary: Callable[[dict], str]
) -> int:
    """Spot every source; events to the JSONL file and the console. Bad input raises
    ValueError, ClusterError, ``LoadError`` or ``SourceError`` (the CLI's usage errors)."""
    from fesnet.realtime.events import ConsoleSink, JsonlSink

    check_args(args, specs)
    cfg = cluster_config(args)
    sinks: list[Any] = []
    jsonl = JsonlSink(args.events) if args.events else None
    if jsonl is not None:
        sinks.append(jsonl)
    if not args.quiet:
        sinks.append(ConsoleSink())
    lock = threading.Lock()

    def emit(event: Any) -> None:
        with lock:
            for sink in sinks:
                sink(event)

    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if cfg is None:
            results = _run_in_process(args, specs, emit, stop)
        else:
            results = _run_on_cluster(args, cfg, specs, emit, stop)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if jsonl is not None:
            jsonl.close()
    return _report(args, results, format_summary)


def _report(
    args: argparse.Namespace, results: dict[str, dict[str, Any]], format_summary: Callable
) -> int:
    failed = 0
    wire = WireStats()
    for stream, res in results.items():
        print(f"\n[{stream}]")
        if "summary" in res:
            print(format_summary(res["summary"]))
            wire.merge(res.get("wire", {}))
        if res.get("error"):
            failed += 1
            print(f"error: {res['error']}", file=sys.stderr)
    frames = sum(r["summary"]["frames"] for r in results.values() if "summary" in r)
    if wire.total_bytes() and frames:
        print(f"\nwire        {wire.total_bytes() / frames / 1024:.1f} KiB per source frame "
              f"to and from the model tier ({frames} frames)")  # fmt: skip
    if args.events:
        print(f"events      {args.events}")
    return 1 if failed else 0


def _run_in_process(
    args: argparse.Namespace, specs: list[str], emit: Any, stop: threading.Event
) -> dict[str, dict[str, Any]]:
    from fesnet.model.runtime import load_runtime, runtime_config
    from fesnet.realtime.session import StreamModel, open_stream
    from fesnet.realtime.sources import open_source

    runtime = load_runtime(runtime_config(args))
    model = StreamModel.of(runtime)
    pipes = {}
    for stream, spec in zip(stream_names(specs), specs, strict=True):
        source = open_source(spec, pace=args.pace, stream=stream)
        pipes[stream] = open_stream(model, source, [emit])
    name = getattr(runtime.backend, "name", args.backend)
    print(f"spotting {len(pipes)} streams in this process with {name}", flush=True)
    for p in pipes.values():
        p.start()
    results: dict[str, dict[str, Any]] = {}
    for stream, p in pipes.items():
        while True:
            if stop.is_set():
                p.request_stop()
            try:
                if p.join(timeout=0.2):
                    results[stream] = {"summary": p.summary()}
                    break
            except Exception as e:
                results[stream] = {"summary": p.summary(), "error": f"stream {stream}: {e}"}
                break
    return results


def _run_on_cluster(
    args: argparse.Namespace,
    cfg: ClusterConfig,
    specs: list[str],
    emit: Any,
    stop: threading.Event,
) -> dict[str, dict[str, Any]]:
    from fesnet.model.runtime import load_runtime, runtime_config

    from .runtime import RayPlacement

    placement = RayPlacement(cfg)
    try:
        rt = load_runtime(runtime_config(args), placement=placement)
        tier = placement.tier
        actors = {
            stream: spawn(cfg, tier, spec, stream, rt.stride_frames, args.pace, rt.merger)
            for stream, spec in zip(stream_names(specs), specs, strict=True)
        }
        replicas = "autoscaled" if cfg.autoscale else str(cfg.replicas)
        print(f"spotting {len(actors)} streams on Ray ({cfg.address}): one actor per stream, "
              f"{replicas} model replica(s) with {rt.backend.name}", flush=True)  # fmt: skip
        t0 = time.monotonic()
        results = drive_actors(actors, emit, stop)
        for res in results.values():
            if "summary" in res:
                res["summary"]["wall_s"] = res["summary"].get("wall_s") or time.monotonic() - t0
        return results
    finally:
        placement.close()
