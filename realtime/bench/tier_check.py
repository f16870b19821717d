"""The stages of scripts/gpu_check.py: reference, then per tier configuration build, parity,
latency and capacity, each recording its result or its error (the script keeps going).

- *Reference*: every synthetic stream spotted offline on the CPU in fp32 (``spot_video`` over the
  per-stream numpy backend, torch eager): window probabilities and merger events.
- *Parity*: the same streams through the tier, all at once (``tier_windows``), against the
  reference: the largest absolute difference of any window probability, the share of windows
  whose largest difference exceeds 1e-3, and the events the real ``IntervalMerger`` makes of
  them (:func:`compare_events`). Stated tolerances (``TOLERANCE``), from what was measured on
  these inputs, with margin:

  - fp32 on the CPU: 2e-5 (2.7e-6 measured: summation order only); identical events.
  - fp32 on CUDA: 1e-4, identical events. The tier runs strict IEEE fp32 there
    (model/tier_run.py); only summation order and cuDNN's algorithms differ from the CPU, as on
    the CPU between batch sizes. With TF32 convolutions (torch's default) an H200 gave 8.9e-3,
    and TF32 emulated on the CPU (inputs and weights of every convolution rounded to a 10-bit
    mantissa) gives 4.7e-3 to 8.2e-3 per stream: TF32 accounts for it.
  - fp16: 5e-2, every final interval matched by one of the same label whose onset and offset
    are within 2 slots (fp16 may move a threshold crossing by a slot). Measured: 1.4e-2 to
    2.2e-2 on an H200 (fp16 autocast, fp16 rings; events identical in every configuration),
    8e-3 to 1.8e-2 per stream with fp16 autocast on the CPU: a 10-bit mantissa moves these
    windows' probabilities by up to ~2e-2, on either device. What that does to F1 on the
    held-out test split: scripts/tier_f1.py (docs/GPU.md).
- *Latency* and *capacity*: realtime/bench/tier.py.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fesnet.model.merger import MergerConfig, MergerEvent, events_to_intervals, merge_offline

from .tier import capacity, capacity_sweep, latency
from .tier_load import SyntheticStream, synthetic_streams, tier_windows

TOLERANCE = {"cpu-fp32": 2e-5, "fp32": 1e-4, "fp16": 5e-2}
COARSE_DIFF = 1e-3  # parity reports the share of windows that differ by more than this
INTERVAL_TOL_SLOTS = 2
SCHEMA = "fesnet-gpu-check/1"


@dataclass(frozen=True)
class CheckConfig:
    """One tier configuration the check runs, and its share of the time budget (seconds)."""

    name: str
    device: str
    precision: str
    graphs: bool
    compile: bool = False
    channels_last: bool = False
    share_s: float = 60.0
    max_bucket: int = 1024
    pad: bool = False
    """Pad to power-of-two buckets even where the runner needs none (the CPU dry run does, so
    CI runs the padded path the CUDA graphs take)."""
    default: bool = True
    """Run without ``--configs`` (the others only when named)."""


CUDA_CONFIGS = (
    # The capacity and latency candidate first: its compile (batch 1 and the dynamic batch, for
    # both functions) is most of its share.
    CheckConfig("fp16-compiled-graphs", "cuda", "fp16", True, compile=True, share_s=115),
    CheckConfig("fp16-channels-last-graphs", "cuda", "fp16", True, channels_last=True,
                share_s=40),
    CheckConfig("fp32-graphs", "cuda", "fp32", True, share_s=40),
    CheckConfig("fp16-graphs", "cuda", "fp16", True, share_s=35),
    CheckConfig("fp32-eager", "cuda", "fp32", False, share_s=30, default=False),
    CheckConfig("fp16-eager", "cuda", "fp16", False, share_s=30, default=False),
)
CPU_CONFIGS = (CheckConfig("cpu-fp32", "cpu", "fp32", False, share_s=120, max_bucket=8,
                           pad=True),)


@dataclass(frozen=True)
class CheckSettings:
    """How much each stage does (``quick``: the CI dry run's sizes)."""

    streams: int = 4
    slots: int = 480
    levels: tuple[int, ...] = (1, 16, 64, 256, 512, 1024, 2048, 4096, 8192)
    cycles: int = 5
    latency_ticks: int = 240
    ring_slots: int = 48
    seed: int = 0
    copy_threads: int = 4
    """Threads that stage a tick's crops in the capacity runs (TickLoad)."""

    @classmethod
    def quick(cls) -> CheckSettings:
        return cls(streams=2, slots=160, levels=(1, 2, 4), cycles=2, latency_ticks=24)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_streams(settings: CheckSettings, geometry: bool, image_size: int) -> list[SyntheticStream]:
    """The synthetic streams every stage and process reads (seeded: the same everywhere)."""
    return synthetic_streams(settings.streams, settings.slots, geometry, image_size, settings.seed)


def event_key(e: MergerEvent) -> tuple:
    """An event without its float score (the score may differ in the last digits)."""
    return (e.state, e.label, e.onset_slot, e.apex_slot, e.offset_slot, e.emitted_at_slot)


def compare_events(ref: list[MergerEvent], got: list[MergerEvent]) -> dict[str, Any]:
    """Identical events, and final intervals matched within ``INTERVAL_TOL_SLOTS``."""
    ri, gi = events_to_intervals(ref), events_to_intervals(got)
    unused = list(gi)
    matched = 0
    for on, off, label in ri:
        hit = next((g for g in unused if g[2] == label and abs(g[0] - on) <= INTERVAL_TOL_SLOTS
                    and abs(g[1] - off) <= INTERVAL_TOL_SLOTS), None)
        if hit is not None:
            unused.remove(hit)
            matched += 1
    return {
        "events_reference": len(ref),
        "events": len(got),
        "identical": [event_key(e) for e in ref] == [event_key(e) for e in got],
        "intervals_reference": len(ri),
        "intervals": len(gi),
        "intervals_matched": matched,
        "within_tolerance": matched == len(ri) == len(gi),
    }


def reference(backend: Any, streams: list[SyntheticStream], merger: MergerConfig,
              stride: int) -> list[dict[str, Any]]:
    """Offline CPU fp32 spotting of each stream: starts, probs, events."""
    from fesnet.model.inference import spot_video

    out = []
    for s in streams:
        pred = spot_video(backend, s.slot_frames(), merger, stride, s.geom)
        out.append({"starts": pred.starts, "probs": pred.window_probs, "events": pred.events})
    return out


def save_reference(path: Path, ref: list[dict[str, Any]]) -> None:
    arrays = {}
    for i, r in enumerate(ref):
        arrays[f"starts_{i}"] = np.asarray(r["starts"], np.int64)
        arrays[f"probs_{i}"] = r["probs"]
    events = [[e.to_dict() for e in r["events"]] for r in ref]
    np.savez(path, events=np.array(json.dumps(events)), **arrays)


def load_reference(path: Path) -> list[dict[str, Any]]:
    with np.load(path) as z:
        events = json.loads(str(z["events"]))
        return [{"starts": z[f"starts_{i}"].tolist(), "probs": z[f"probs_{i}"],
                 "events": [MergerEvent(**e) for e in ev]}
                for i, ev in enumerate(events)]


def parity(tier: Any, streams: list[SyntheticStream], ref: list[dict[str, Any]],
           merger: MergerConfig, stride: int, tolerance: float) -> dict[str, Any]:
    """The tier's windows and events against the reference (module docstring)."""
    got = tier_windows(tier, streams, stride)
    diffs, per_stream = [], []
    for (starts, probs), r in zip(got, ref, strict=True):
        if starts != list(r["starts"]):
            raise AssertionError(f"window starts differ: {starts[:5]}... vs {r['starts'][:5]}...")
        diffs.append(float(np.abs(probs - r["probs"]).max()) if len(probs) else 0.0)
        events, _ = merge_offline(starts, list(probs), merger)
        per_stream.append(compare_events(r["events"], events))
    worst = max(diffs)
    per_window = np.concatenate([np.abs(p - r["probs"]).reshape(len(p), -1).max(axis=1)
                                 for (_, p), r in zip(got, ref, strict=True)])
    return {
        "windows": sum(len(s) for s, _ in got),
        "max_abs_diff": worst,
        "windows_over_1e-3": round(float(np.mean(per_window > COARSE_DIFF)), 4)
        if len(per_window) else 0.0,
        "max_abs_diff_per_stream": diffs,
        "tolerance": tolerance,
        "probs_within_tolerance": worst <= tolerance,
        "events": per_stream,
        "events_identical": all(e["identical"] for e in per_stream),
        "events_within_tolerance": all(e["within_tolerance"] for e in per_stream),
    }


def machine(gpu: bool = False) -> dict[str, Any]:
    """What ran the check: versions and, with ``gpu``, the GPU and its numeric settings (that
    creates a CUDA context, so the parent process, which runs nothing on the GPU, leaves it to
    its children: a GPU in exclusive-process mode takes one context at a time)."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "platform": platform.platform(), "cuda_available":
                            torch.cuda.is_available()}
    for mod in ("numpy", "cv2", "onnxruntime", "triton"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:
            info[mod] = f"unavailable ({type(e).__name__})"
    if gpu and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


def run_stage(out: dict[str, Any], name: str, fn: Callable[[], Any],
              write: Callable[[], None]) -> Any:
    """``out[name] = fn()``, or its error in ``out["errors"][name]``; written either way."""
    t0 = time.perf_counter()
    print(f"[{out.get('config', 'check')}] {name} ...", flush=True)
    try:
        result = fn()
    except Exception as e:
        out.setdefault("errors", {})[name] = "".join(
            traceback.format_exception(type(e), e, e.__traceback__, limit=-8))
        print(f"[{out.get('config', 'check')}] {name} FAILED: {type(e).__name__}: {e}", flush=True)
        result = None
    else:
        out[name] = result
    out.setdefault("elapsed_s", {})[name] = round(time.perf_counter() - t0, 2)
    write()
    return result


def run_config(cfg: CheckConfig, ck: Any, merger: MergerConfig, stride: int,
               settings: CheckSettings, ref: list[dict[str, Any]], deadline: float,
               out: dict[str, Any], write: Callable[[], None]) -> None:
    """Build one configuration's tier and run its stages until ``deadline`` (perf_counter)."""
    from fesnet.model.tier_plan import bucket_sizes
    from fesnet.model.tier_run import make_tier

    def build() -> Any:
        import torch

        t0 = time.perf_counter()
        tier = make_tier("torch", ck, device=cfg.device, precision=cfg.precision,
                         graphs=cfg.graphs, compile=cfg.compile,
                         channels_last=cfg.channels_last,
                         max_streams=max(max(settings.levels), settings.streams),
                         ring_slots=settings.ring_slots, max_bucket=cfg.max_bucket,
                         buckets=bucket_sizes(cfg.max_bucket) if cfg.pad else None)
        info = {"tier": tier.name, "build_s": round(time.perf_counter() - t0, 2),
                "capture_s": round(getattr(tier.runner, "capture_s", 0.0), 2),
                "buckets": list(tier.buckets or ()), "ring_gib": round(tier.ring_bytes / 2**30, 2),
                "max_streams": tier.max_streams}
        if tier.device.type == "cuda":
            info["cuda_memory_reserved_gib"] = round(torch.cuda.memory_reserved() / 2**30, 2)
        built.append(tier)
        return info

    built: list[Any] = []
    run_stage(out, "machine", lambda: machine(gpu=cfg.device == "cuda"), write)
    run_stage(out, "build", build, write)
    if not built:
        return
    tier = built[0]
    geometry = tier.geometry_dims > 0
    streams = make_streams(settings, geometry, tier.image_size)
    tol = TOLERANCE["cpu-fp32" if cfg.device == "cpu" else cfg.precision]
    run_stage(out, "parity", lambda: parity(tier, streams, ref, merger, stride, tol), write)
    pool = streams[0].frames
    geom = streams[0].geom
    run_stage(out, "latency", lambda: latency(tier, stride, pool, geom, settings.latency_ticks),
              write)
    sweep = run_stage(out, "capacity", lambda: capacity_sweep(
        tier, settings.levels, stride, pool, geom, settings.cycles, deadline,
        progress=lambda m: print(m, flush=True), copy_threads=settings.copy_threads),
        write)
    if sweep and sweep["levels"] and time.perf_counter() < deadline:
        top = sweep["levels"][-1]["streams"]  # the same level, measured the first check's way
        run_stage(out, "capacity_serial", lambda: capacity(
            tier, top, stride, pool, geom, settings.cycles, deadline, pipelined=False,
            copy_threads=settings.copy_threads), write)
