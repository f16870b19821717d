"""Model-tier benchmarks: cameras per device at 60 FPS, one camera's latency, and the shared tier
against today's per-stream Engine (``fesnet-bench --tier``; scripts/gpu_check.py runs the same
functions on a GPU machine).

- :func:`capacity`: N cameras at 60 FPS (:class:`~.tier_load.TickLoad`: one new crop per camera
  per tick, a window every ``stride`` ticks, staggered). A *cycle* is ``stride`` ticks, in which
  every camera adds ``stride`` slots and gets one window; it must take at most ``stride / 60`` s
  for N cameras to run in real time. Cameras at 60 FPS at level N = N * (stride / 60) / median
  cycle time (how many the tier's throughput at that batch size carries); the sweep stops once a
  level is saturated (cycle median over twice the real-time budget). *Pipelined* (the default):
  one thread stages tick k + 1's crops into the tier's pinned buffer and submits it while the
  device runs tick k, then collects tick k's probabilities; the cycle is wall time with
  everything in it (staging included), and each step's device phases are timed
  (``device_ms``). *Serial*: stage, step, wait, with staging timed apart and left out of the
  cycle (the first GPU check's measure, kept to compare).
- :func:`latency`: one camera; the step that completes a window (encode 1 crop + window head +
  probabilities on the host) and the encode-only steps, each from an idle device; then the same
  steps again with their device phases timed (``device_ms``: what of the step the device took).
- :func:`engine_vs_tier`: the same N streams, interleaved cycle by cycle (same machine load):
  today's path (per stream, encoder batch 1 and one ``Engine.step`` per window) against one tier
  step per tick. Model frames/s = N * stride / cycle time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fesnet.model.tier import ModelTier

from ..engine import Engine, WindowScheduler
from ..ring import FeatureRing
from .config import BenchConfig
from .tier_load import EngineStream, SyntheticStream, TickLoad, synthetic_streams
from .timing import percentiles_ms

log = logging.getLogger(__name__)

FPS = 60.0


def capacity(
    tier: ModelTier,
    n_streams: int,
    stride: int,
    pool: np.ndarray,
    geom: np.ndarray | None,
    cycles: int = 5,
    deadline: float | None = None,
    pipelined: bool = True,
    copy_threads: int = 1,
) -> dict[str, Any]:
    """One level of the capacity sweep (module docstring); ``copy_threads`` stage the crops."""
    load = TickLoad(tier, n_streams, stride, pool, geom, copy_threads)
    try:
        for _ in range(tier.window_frames + stride):  # fill the rings, reach the steady load
            tier.step(load.batch())
        tier.synchronize()
        run = _pipelined_cycles if pipelined else _serial_cycles
        row = run(tier, load, stride, cycles, deadline)
    finally:
        tier.timed = False
        load.close()
    budget_s = stride / FPS
    p50 = float(np.median(row.pop("cycle")))
    return {
        "streams": n_streams,
        "mode": "pipelined" if pipelined else "serial",
        "copy_threads": load.copy_threads,
        **row,
        "realtime_budget_ms": round(budget_s * 1e3, 3),
        "realtime": p50 <= budget_s,
        "cameras_at_60fps": int(n_streams * budget_s / p50),
        "model_frames_per_s": round(n_streams * stride / p50, 1),
    }


def _pipelined_cycles(tier: ModelTier, load: TickLoad, stride: int, cycles: int,
                      deadline: float | None) -> dict[str, Any]:
    """Each tick: stage its crops (waiting, if need be, for the step two back), submit it, then
    collect the previous tick's result, so staging tick k + 1 overlaps the device's step k. A
    cycle is the wall time between the ends of consecutive cycles: everything included."""
    tier.timed = True
    stage, submit, wait, cycle = [], [], [], []
    phases: dict[str, list[float]] = {}
    prev = None
    mark = time.perf_counter()
    for _ in range(cycles):
        for _ in range(stride):
            t0 = time.perf_counter()
            batch = load.batch()
            t1 = time.perf_counter()
            pending = tier.submit(batch)
            t2 = time.perf_counter()
            if prev is not None:
                prev.result()
                for k, v in prev.phases_ms().items():
                    phases.setdefault(k, []).append(v / 1e3)
            stage.append(t1 - t0)
            submit.append(t2 - t1)
            wait.append(time.perf_counter() - t2)
            prev = pending
        now = time.perf_counter()
        cycle.append(now - mark)
        mark = now
        if deadline is not None and now > deadline:
            break
    if prev is not None:
        prev.result()
    return {"cycles": len(cycle), "cycle": cycle, "cycle_ms": percentiles_ms(cycle),
            "stage_ms": percentiles_ms(stage), "submit_ms": percentiles_ms(submit),
            "wait_ms": percentiles_ms(wait),
            "device_ms": {k: percentiles_ms(v) for k, v in phases.items()}}


def _serial_cycles(tier: ModelTier, load: TickLoad, stride: int, cycles: int,
                   deadline: float | None) -> dict[str, Any]:
    """Each tick staged, then stepped to its result; staging is timed apart and left out of the
    cycle (how the first GPU check measured: the model tier's own time, nothing overlapped)."""
    stage, step, cycle = [], [], []
    for _ in range(cycles):
        c = 0.0
        for _ in range(stride):
            t0 = time.perf_counter()
            batch = load.batch()
            t1 = time.perf_counter()
            tier.step(batch)
            t2 = time.perf_counter()
            stage.append(t1 - t0)
            step.append(t2 - t1)
            c += t2 - t1
        t3 = time.perf_counter()
        tier.synchronize()
        cycle.append(c + time.perf_counter() - t3)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return {"cycles": len(cycle), "cycle": cycle, "cycle_ms": percentiles_ms(cycle),
            "step_ms": percentiles_ms(step), "stage_ms": percentiles_ms(stage)}


def capacity_sweep(
    tier: ModelTier,
    levels: Sequence[int],
    stride: int,
    pool: np.ndarray,
    geom: np.ndarray | None,
    cycles: int = 5,
    deadline: float | None = None,
    progress: Callable[[str], None] = log.info,
    pipelined: bool = True,
    copy_threads: int = 1,
) -> dict[str, Any]:
    """:func:`capacity` at each level (ascending, up to the tier's ``max_streams``) until one is
    saturated or ``deadline`` (``time.perf_counter()``) passes. ``cameras_at_60fps``: the most
    any level carried, capped by its N."""
    rows: list[dict[str, Any]] = []
    stopped = "levels done"
    last: tuple[int, float] | None = None  # (streams, seconds) of the previous level
    for n in sorted(set(levels)):
        if n > tier.max_streams:
            stopped = f"level {n} > the tier's max_streams {tier.max_streams}"
            break
        now = time.perf_counter()
        expect = 0.0 if last is None else last[1] * n / last[0]  # a level's cost grows with N
        if deadline is not None and now + expect > deadline:
            stopped = f"time budget (level {n} would take ~{expect:.0f} s)"
            break
        row = capacity(tier, n, stride, pool, geom, cycles, deadline, pipelined, copy_threads)
        last = (n, time.perf_counter() - now)
        rows.append(row)
        dev = row.get("device_ms", {}).get("device", {}).get("p50_ms")
        progress(f"  {tier.name}: {n} streams, cycle p50 {row['cycle_ms']['p50_ms']:.2f} ms "
                 f"(budget {row['realtime_budget_ms']:.1f}; stage "
                 f"{row['stage_ms']['p50_ms']:.2f} ms/tick"
                 + (f", device {dev:.2f} ms/tick" if dev is not None else "")
                 + f"), ~{row['cameras_at_60fps']} cameras")
        if row["cycle_ms"]["p50_ms"] > 2 * row["realtime_budget_ms"]:
            stopped = f"saturated at {n} streams"
            break
    best = max((min(r["streams"], r["cameras_at_60fps"]) for r in rows), default=0)
    return {"levels": rows, "cameras_at_60fps": best, "stopped": stopped}


def latency(
    tier: ModelTier, stride: int, pool: np.ndarray, geom: np.ndarray | None, ticks: int = 400
) -> dict[str, Any]:
    """One camera's model latency per step, from an idle device (module docstring)."""
    load = TickLoad(tier, 1, stride, pool, geom)
    window, encode = [], []
    phases: dict[str, dict[str, list[float]]] = {"window_step": {}, "encode_step": {}}
    try:
        for _ in range(tier.window_frames + stride):
            tier.step(load.batch())
        for timed in (False, True):
            tier.timed = timed
            for _ in range(ticks if not timed else max(8, ticks // 4)):
                batch = load.batch()
                tier.synchronize()
                t0 = time.perf_counter()
                pending = tier.submit(batch)
                pending.result()
                tier.synchronize()
                kind = "window_step" if batch.n_windows else "encode_step"
                if not timed:
                    (window if batch.n_windows else encode).append(time.perf_counter() - t0)
                for k, v in pending.phases_ms().items():
                    phases[kind].setdefault(k, []).append(v / 1e3)
    finally:
        tier.timed = False
        load.close()
    return {"window_step_ms": percentiles_ms(window), "encode_step_ms": percentiles_ms(encode),
            "device_ms": {kind: {k: percentiles_ms(v) for k, v in p.items()}
                          for kind, p in phases.items()}}


def engine_vs_tier(
    engine: Engine,
    tier: ModelTier,
    streams: Sequence[SyntheticStream],
    levels: Sequence[int],
    stride: int,
    seconds: float = 2.0,
    min_cycles: int = 5,
) -> list[dict[str, Any]]:
    """Today's per-stream path against the shared tier at each level (module docstring); both
    read the same synthetic streams (60 FPS: a new crop every slot)."""
    rows = []
    for n in levels:
        today = _engine_cycle(engine, [streams[i % len(streams)] for i in range(n)], stride)
        pool = streams[0].frames
        geom = streams[0].geom
        load = TickLoad(tier, n, stride, pool, geom)
        try:
            for _ in range(tier.window_frames + stride):
                tier.step(load.batch())

            def shared(load: TickLoad = load) -> None:
                for _ in range(stride):
                    tier.step(load.batch())
                tier.synchronize()

            samples: dict[str, list[float]] = {"engine": [], "tier": []}
            end = time.perf_counter() + seconds
            while len(samples["tier"]) < min_cycles or time.perf_counter() < end:
                for name, fn in (("engine", today), ("tier", shared)):
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t0)
        finally:
            load.close()
        row: dict[str, Any] = {"streams": n}
        for name, s in samples.items():
            row[name] = {"cycle_ms": percentiles_ms(s),
                         "model_frames_per_s": round(n * stride / float(np.median(s)), 1)}
        row["tier_vs_engine"] = round(float(np.median(samples["engine"]))
                                      / float(np.median(samples["tier"])), 3)
        rows.append(row)
    return rows


def _engine_cycle(engine: Engine, streams: Sequence[SyntheticStream],
                  stride: int) -> Callable[[], None]:
    """A cycle of today's path for these streams: each adds ``stride`` slots, one at a time;
    warmed up and staggered like :class:`TickLoad`."""
    t = engine.window_frames
    runners = [EngineStream(engine, FeatureRing(t + 2 * stride, engine.slot_arrays()),
                            WindowScheduler(t, stride), s) for s in streams]
    slot = [0] * len(runners)
    for i, r in enumerate(runners):
        for _ in range(t + i % stride):
            r.add(slot[i])
            slot[i] += 1

    def cycle() -> None:
        for _ in range(stride):
            for i, r in enumerate(runners):
                r.add(slot[i])
                slot[i] += 1

    return cycle


def run_tier_bench(config: BenchConfig, report: dict[str, Any]) -> None:
    """``fesnet-bench --tier``: the model tier of ``config.tier_backend`` on ``config.device``:
    capacity over ``config.streams``, one camera's latency, and against today's per-stream
    Engine (the same backend, numpy in and out) at ``config.tier_compare`` streams."""
    from fesnet.model.runtime import build_backend, stride_of
    from fesnet.model.tier_run import make_tier, resolve

    from .backends import load_model

    ck, model_info = load_model(config)
    stride = stride_of(ck, config.stride_frames)
    name, device, precision = resolve(config.tier_backend, config.device, config.tier_precision)
    threads = min(config.threads)
    levels = sorted(set(config.streams) | set(config.tier_compare))
    tier = make_tier(name, ck, device=device, precision=precision, compile=config.tier_compile,
                     threads=threads, max_streams=max(levels), max_bucket=config.tier_max_bucket,
                     ring_slots=ck.config.window_frames + 2 * stride + 1)
    geometry = ck.config.geometry_dims > 0
    n_streams = max(2, min(8, max(config.tier_compare, default=2)))
    streams = synthetic_streams(n_streams, config.tier_slots, geometry, ck.config.image_size,
                                fps=(60,))
    pool, geom = streams[0].frames, streams[0].geom
    report["model"] = {**model_info, "stride_frames": stride, "config": ck.config.to_dict()}
    out: dict[str, Any] = {"tier": tier.name, "device": device, "precision": precision,
                           "buckets": list(tier.buckets or ()), "threads": threads}
    log.info("tier %s: latency", tier.name)
    out["latency"] = latency(tier, stride, pool, geom, ticks=max(40, int(60 * config.seconds)))
    log.info("tier %s: capacity over %s streams", tier.name, list(config.streams))
    out["capacity"] = capacity_sweep(tier, config.streams, stride, pool, geom)
    if config.tier_compare:
        today = build_backend("torch" if name == "torch" else name, ck, threads,
                              **({"device": device} if name == "torch" else {}))
        engine = Engine(today, ck.config.window_frames)
        log.info("tier %s against today's engine (%s) at %s streams", tier.name, today.name,
                 list(config.tier_compare))
        out["engine_backend"] = today.name
        out["engine_vs_tier"] = engine_vs_tier(engine, tier, streams, config.tier_compare, stride,
                                               config.seconds)
    out["counts"] = dict(tier.counts)
    report["tier"] = out


def tier_summary(report: dict[str, Any]) -> list[str]:
    """The tier bench's lines of ``fesnet-bench``'s summary."""
    t = report.get("tier")
    if not t:
        return []
    lat = t["latency"]["window_step_ms"]
    lines = [f"tier {t['tier']}: one camera p50 {lat.get('p50_ms', float('nan')):.2f} ms / p99 "
             f"{lat.get('p99_ms', float('nan')):.2f} ms; ~{t['capacity']['cameras_at_60fps']} "
             f"cameras at 60 FPS ({t['capacity']['stopped']})"]
    for r in t.get("engine_vs_tier", []):
        lines.append(f"  {r['streams']} streams: engine {r['engine']['model_frames_per_s']:.0f} "
                     f"frames/s, tier {r['tier']['model_frames_per_s']:.0f} frames/s "
                     f"(x{r['tier_vs_engine']:.2f})")
    return lines
