"""Model-tier benchmarks: cameras per device at 60 FPS, one camera's latency, and the shared tier
against today's per-stream Engine (``fesnet-bench --tier``; scripts/gpu_check.py runs the same
functions on a GPU machine).

- :func:`capacity`: N cameras at 60 FPS (:class:`~.tier_load.TickLoad`: one new crop per camera
  per tick, a window every ``stride`` ticks, staggered). A *cycle* is ``stride`` ticks, in which
  every camera adds ``stride`` slots and gets one window; it must take at most ``stride / 60`` s
  for N cameras to run in real time. Cameras at 60 FPS at level N = N * (stride / 60) / median
  cycle time (how many the tier's throughput at that batch size carries); the sweep stops once a
  level is saturated (cycle median over twice the real-time budget). Writing the crops into the
  tier's staging buffer (``stage_ms``) is timed apart: it is the ingest's copy, not model work.
- :func:`latency`: one camera; the step that completes a window (encode 1 crop + window head +
  probabilities on the host) and the encode-only steps, each from an idle device.
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
) -> dict[str, Any]:
    """One level of the capacity sweep (module docstring)."""
    load = TickLoad(tier, n_streams, stride, pool, geom)
    try:
        for _ in range(tier.window_frames + stride):  # fill the rings, reach the steady load
            tier.step(load.batch())
        tier.synchronize()
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
    finally:
        load.close()
    budget_s = stride / FPS
    p50 = float(np.median(cycle))
    return {
        "streams": n_streams,
        "cycles": len(cycle),
        "cycle_ms": percentiles_ms(cycle),
        "step_ms": percentiles_ms(step),
        "stage_ms": percentiles_ms(stage),
        "realtime_budget_ms": round(budget_s * 1e3, 3),
        "realtime": p50 <= budget_s,
        "cameras_at_60fps": int(n_streams * budget_s / p50),
        "model_frames_per_s": round(n_streams * stride / p50, 1),
    }


def capacity_sweep(
    tier: ModelTier,
    levels: Sequence[int],
    stride: int,
    pool: np.ndarray,
    geom: np.ndarray | None,
    cycles: int = 5,
    deadline: float | None = None,
    progress: Callable[[str], None] = log.info,
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
        row = capacity(tier, n, stride, pool, geom, cycles, deadline)
        last = (n, time.perf_counter() - now)
        rows.append(row)
        progress(f"  {tier.name}: {n} streams, cycle p50 {row['cycle_ms']['p50_ms']:.2f} ms "
                 f"(budget {row['realtime_budget_ms']:.1f}), ~{row['cameras_at_60fps']} cameras")
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
    try:
        for _ in range(tier.window_frames + stride):
            tier.step(load.batch())
        for _ in range(ticks):
            batch = load.batch()
            tier.synchronize()
            t0 = time.perf_counter()
            tier.step(batch)
            tier.synchronize()
            (window if batch.n_windows else encode).append(time.perf_counter() - t0)
    finally:
        load.close()
    return {"window_step_ms": percentiles_ms(window), "encode_step_ms": percentiles_ms(encode)}


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
                                      / float(np.median(samples["tier"])), 3)  # fmt: skip
        rows.append(row)
    return rows


def _engine_cycle(engine: Engine, streams: Sequence[SyntheticStream],
                  stride: int) -> Callable[[], None]:  # fmt: skip
    """A cycle of today's path for these streams: each adds ``stride`` slots, one at a time;
    warmed up and staggered like :class:`TickLoad`."""
    t = engine.window_frames
    runners = [EngineStream(engine, FeatureRing(t + 2 * stride, engine.slot_arrays()),
                            WindowScheduler(t, stride), s) for s in streams]  # fmt: skip
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
    from fesnet.model.runtime import DEFAULT_STRIDE_FRAMES, build_backend
    from fesnet.model.tier_run import make_tier, resolve

    from .backends import load_model

    ck, model_info = load_model(config)
    stride = config.stride_frames or int(ck.meta.get("stride_frames", DEFAULT_STRIDE_FRAMES))
    name, device, precision = resolve(config.tier_backend, config.device, config.tier_precision)
    threads = min(config.threads)
    levels = sorted(set(config.streams) | set(config.tier_compare))
    tier = make_tier(name, ck, device=device, precision=precision, compile=config.tier_compile,
                     threads=threads, max_streams=max(levels), max_bucket=config.tier_max_bucket,
                     ring_slots=ck.config.window_frames + 2 * stride + 1)  # fmt: skip
    geometry = ck.config.geometry_dims > 0
    n_streams = max(2, min(8, max(config.tier_compare, default=2)))
    streams = synthetic_streams(n_streams, config.tier_slots, geometry, ck.config.image_size,
                                fps=(60,))  # fmt: skip
    pool, geom = streams[0].frames, streams[0].geom
    report["model"] = {**model_info, "stride_frames": stride, "config": ck.config.to_dict()}
    out: dict[str, Any] = {"tier": tier.name, "device": device, "precision": precision,
                           "buckets": list(tier.buckets or ()), "threads": threads}  # fmt: skip
    log.info("tier %s: latency", tier.name)
    out["latency"] = latency(tier, stride, pool, geom, ticks=max(40, int(60 * config.seconds)))
    log.info("tier %s: capacity over %s streams", tier.name, list(config.streams))
    out["capacity"] = capacity_sweep(tier, config.streams, stride, pool, geom)
    if config.tier_compare:
        today = build_backend("torch" if name == "torch" else name, ck, threads,
                              **({"device": device} if name == "torch" else {}))  # fmt: skip
        engine = Engine(today, ck.config.window_frames)
        log.info("tier %s against today's engine (%s) at %s streams", tier.name, today.name,
                 list(config.tier_compare))  # fmt: skip
        out["engine_backend"] = today.name
        out["engine_vs_tier"] = engine_vs_tier(engine, tier, streams, config.tier_compare, stride,
                                               config.seconds)  # fmt: skip
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
             f"cameras at 60 FPS ({t['capacity']['stopped']})"]  # fmt: skip
    for r in t.get("engine_vs_tier", []):
        lines.append(f"  {r['streams']} streams: engine {r['engine']['model_frames_per_s']:.0f} "
                     f"frames/s, tier {r['tier']['model_frames_per_s']:.0f} frames/s "
                     f"(x{r['tier_vs_engine']:.2f})")  # fmt: skip
    return lines
