"""fesnet-bench: how fast the spotter runs on this machine, as JSON plus a PNG plot.

What it measures (all in one run, so the ratios are comparable even on a noisy shared machine):

- per backend (torch eager, torch.compile on request, ONNX Runtime, TensorRT where available) and
  thread count: encoder latency for one frame (the streaming case), window-head latency for a batch
  of 1..N windows (N streams sharing one call), and the per-frame model cost while streaming at
  ``stride``: encode one frame + 1/stride of a window. Ratios to torch eager.
- cached encoder vs naive recompute: a window costs ``stride`` single-frame encodes + the head when
  per-frame features are cached, against encoding all T frames + the head when they are not.
- the optical-flow input stage of most published spotters (TV-L1 and Farneback + optical strain
  on the same aligned crops, see optical_flow.py) against our per-frame model cost.
- end to end (with ``--video``): the streaming pipeline's per-stage timings (decode, landmarks +
  align, encode, window, merge, emit; p50/p95/p99), capture -> event latency, sustained frames/s
  and dropped frames for 1..N concurrent streams, ``--pace live`` replaying the file at its own
  frame rate (drops then mean "too slow for live"), ``--pace fast`` as fast as possible.

Timings are medians and tail percentiles of wall-clock calls. The model-only items of one thread
count run interleaved (round-robin, about ``--seconds`` each), so every backend and the flow
baseline see the same machine load and their ratios hold even when absolute numbers drift.
docs/BENCHMARKS.md has the numbers from the project's 2-core machine and the command that made them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCHEMA = "fesnet-bench/1"
PERCENTILES = (50, 95, 99)


# --- measuring ---------------------------------------------------------------------------------


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds (and the sample count) of durations in seconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {"n": 0}
    out = {f"p{p}_ms": round(float(np.percentile(a, p)), 4) for p in PERCENTILES}
    out["mean_ms"] = round(float(a.mean()), 4)
    out["n"] = int(a.size)
    return out


def median_s(samples: Sequence[float]) -> float:
    return float(np.median(samples))


# --- inputs ------------------------------------------------------------------------------------


def face_crops(n: int, size: int = 112, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) RGB uint8: a shipped real face, slowly moving (small rotation, shift and
    scale per frame) so optical flow has real motion to track."""
    import cv2

    faces = Path(__file__).resolve().parents[1] / "model" / "data" / "faces"
    bgr = cv2.imread(str(faces / "door-man.jpg"), cv2.IMREAD_COLOR)
    if bgr is None:
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        base = cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA), 4)
    out = np.empty((n, size, size, 3), np.uint8)
    c = size / 2
    for i in range(n):
        phase = 2 * np.pi * i / 60
        m = cv2.getRotationMatrix2D((c, c), 2.0 * np.sin(phase), 1.0 + 0.02 * np.sin(2 * phase))
        m[:, 2] += (1.5 * np.sin(phase), 1.0 * np.cos(phase))
        out[i] = cv2.warpAffine(base, m, (size, size), borderMode=cv2.BORDER_REFLECT)
    return out


# --- model-only benchmarks ---------------------------------------------------------------------


def time_interleaved(
    calls: dict[Any, Callable[[], Any]], seconds: float, min_rounds: int = 5, warmup: int = 2
) -> dict[Any, list[float]]:
    """Durations of every call, taken in rounds (each round calls each once, in order).

    On a shared machine the load changes from second to second; interleaving puts every backend
    under the same conditions, so the ratios between them stay meaningful when absolute numbers
    do not.
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples: dict[Any, list[float]] = {k: [] for k in calls}
    end = time.perf_counter() + seconds
    rounds = 0
    while rounds < min_rounds or time.perf_counter() < end:
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
        rounds += 1
    return samples


def backend_calls(
    backend: Any, crops: np.ndarray, window_frames: int, batches: Sequence[int]
) -> dict[str, Callable[[], Any]]:
    """What is timed per backend: encoder on 1 and on T frames, window head on B = 1..N windows,
    and a naive window (encode all T frames, then the head)."""
    frames, one = crops[:window_frames], crops[:1]
    x_prime, x_atten = backend.encode(frames)
    calls: dict[str, Callable[[], Any]] = {
        "encode_1": lambda: backend.encode(one),
        "encode_T": lambda: backend.encode(frames),
    }
    for b in batches:
        xp = np.repeat(x_prime[None], b, axis=0)
        xa = np.repeat(x_atten[None], b, axis=0)
        calls[f"window_{b}"] = lambda xp=xp, xa=xa: backend.window(xp, xa)

    def naive() -> None:
        p, a = backend.encode(frames)
        backend.window(p[None], a[None])

    calls["naive"] = naive
    return calls


def summarize_backend(
    samples: dict[str, list[float]], window_frames: int, stride_frames: int, batches: Sequence[int]
) -> dict[str, Any]:
    """Percentiles and the derived rates: streaming per-frame cost = encode 1 frame + 1/stride of
    a window head; cached window = stride single-frame encodes + head; naive = T-frame encode +
    head."""
    t = window_frames
    window = {str(b): samples[f"window_{b}"] for b in batches}
    enc_frame_s = median_s(samples["encode_1"])
    win1_s = median_s(window[str(batches[0])]) / batches[0]
    per_frame_s = enc_frame_s + win1_s / stride_frames
    cached_window_s = stride_frames * enc_frame_s + win1_s
    naive_s = median_s(samples["naive"])
    return {
        "encode_1_frame": percentiles_ms(samples["encode_1"]),
        f"encode_{t}_frames": percentiles_ms(samples["encode_T"]),
        "window": {b: percentiles_ms(v) for b, v in window.items()},
        "naive_window": percentiles_ms(samples["naive"]),
        "encoder_frames_per_s": round(1.0 / enc_frame_s, 2),
        f"encoder_frames_per_s_batch{t}": round(t / median_s(samples["encode_T"]), 2),
        "windows_per_s": {b: round(int(b) / median_s(v), 2) for b, v in window.items()},
        "stream_ms_per_frame": round(per_frame_s * 1e3, 4),
        "stream_frames_per_s": round(1.0 / per_frame_s, 2),
        "realtime_factor_60fps": round(1.0 / per_frame_s / 60.0, 3),
        "cached_window_ms": round(cached_window_s * 1e3, 4),
        "naive_window_ms": round(naive_s * 1e3, 4),
        "cached_vs_naive": round(naive_s / cached_window_s, 3),
    }


def flow_call(method: str, crops: np.ndarray, threads: int) -> Callable[[], Any]:
    """One frame of the optical-flow input stage (flow + strain of frame i vs i + 1)."""
    from .optical_flow import OpticalFlowBaseline

    base = OpticalFlowBaseline(method, threads=threads)
    state = {"i": 0}
    n = len(crops)

    def one() -> None:
        i = state["i"] = (state["i"] + 1) % (n - 1)
        base.features(crops[i], crops[i + 1])

    return one


def summarize_flow(method: str, samples: list[float]) -> dict[str, Any]:
    return {
        "method": method,
        "per_frame": percentiles_ms(samples),
        "frames_per_s": round(1.0 / median_s(samples), 2),
    }


def load_model(checkpoint: str | None, config: str | None) -> tuple[Any, dict[str, Any]]:
    """A Checkpoint to benchmark: ``checkpoint``, else the shipped one, else random weights of
    ``config`` (speed does not depend on the weights' values)."""
    from fesnet.model import checkpoint as ckpt_mod
    from fesnet.model.fesnet import FESNet, FESNetConfig

    if config is None and checkpoint is None and ckpt_mod.DEFAULT_CHECKPOINT.is_file():
        checkpoint = str(ckpt_mod.DEFAULT_CHECKPOINT)
    if checkpoint is not None:
        ck = ckpt_mod.load(checkpoint)
        return ck, {"checkpoint": str(checkpoint), "weights": "checkpoint"}
    import torch

    torch.manual_seed(0)
    cfg = FESNetConfig.named(config or "small")
    net = FESNet(cfg).eval()
    ck = ckpt_mod.Checkpoint(net=net, config=cfg, meta={})
    return ck, {"checkpoint": None, "weights": f"random ({config or 'small'})"}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m_at_start": _load_avg(),
    }
    for mod in ("torch", "onnxruntime", "cv2", "numpy", "mediapipe"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:
        info["cuda"] = None
    return info


def _load_avg() -> float | None:
    """1-minute load average: other processes on a shared machine skew every timing."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def run_model_benchmarks(args: argparse.Namespace, report: dict[str, Any]) -> Any:
    """Backends, cached vs naive and optical flow into ``report``; returns the Checkpoint."""
    from fesnet.model.backends import BackendUnavailable
    from fesnet.model.tensorrt_export import tensorrt_unavailable_reason

    ck, model_info = load_model(args.checkpoint, args.config)
    cfg = ck.config
    report["model"] = {
        **model_info,
        "window_frames": cfg.window_frames,
        "stride_frames": args.stride,
        "config": cfg.to_dict(),
    }
    crops = face_crops(max(cfg.window_frames + 1, 64), cfg.image_size)
    batches = list(range(1, max(args.streams) + 1))
    runs, flows, unavailable = [], [], {}
    for threads in args.threads:  # one group per thread count, its backends interleaved
        _set_torch_threads(threads)
        group: dict[str, tuple[Any, float]] = {}
        for name in args.backends:
            if name in unavailable or (name == "tensorrt" and threads != args.threads[0]):
                continue  # TensorRT: thread counts do not apply
            try:
                group[name] = _build_backend(name, ck, args, threads, crops)
            except BackendUnavailable as e:
                unavailable[name] = str(e)
        calls: dict[tuple[str, str], Callable[[], Any]] = {}
        for name, (backend, _) in group.items():
            for item, fn in backend_calls(backend, crops, cfg.window_frames, batches).items():
                calls[(name, item)] = fn
        log.info("timing %s at %d thread(s), interleaved", ", ".join(group), threads)
        samples: dict[tuple[str, str], list[float]] = {}
        for item in dict.fromkeys(item for _, item in calls):  # one interleaved loop per item
            same = {k: fn for k, fn in calls.items() if k[1] == item}
            samples.update(time_interleaved(same, args.seconds * len(same)))
        if threads == args.threads[0] and args.flow:
            fl = {("flow", m): flow_call(m, crops, threads) for m in args.flow}
            samples.update(time_interleaved(fl, args.seconds * len(fl), min_rounds=10))
            flows = [summarize_flow(m, samples[("flow", m)]) for m in args.flow]
        for name, (_, setup_s) in group.items():
            own = {item: v for (n, item), v in samples.items() if n == name}
            runs.append(
                {
                    "backend": name,
                    "threads": threads,
                    "setup_s": round(setup_s, 2),
                    **summarize_backend(own, cfg.window_frames, args.stride, batches),
                }
            )
    if "tensorrt" not in args.backends:
        reason = tensorrt_unavailable_reason(args.precision)
        if reason is not None:
            unavailable["tensorrt"] = reason
    report["backends"] = runs
    report["unavailable"] = unavailable
    report["ratios_vs_torch"] = ratios_vs_torch(runs)
    report["optical_flow"] = flows
    report["ours_vs_flow"] = [
        {
            "backend": r["backend"],
            "threads": r["threads"],
            "flow": f["method"],
            "ours_frames_per_s": r["stream_frames_per_s"],
            "flow_frames_per_s": f["frames_per_s"],
            "ratio": round(r["stream_frames_per_s"] / f["frames_per_s"], 3),
        }
        for r in runs
        for f in flows
    ]
    return ck


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _build_backend(
    name: str, ck: Any, args: argparse.Namespace, threads: int, crops: np.ndarray
) -> tuple[Any, float]:
    """make_backend with the bench's options; returns it and its setup time (export, compile or
    engine load, and the first call)."""
    from fesnet.model.backends import make_backend

    opts: dict[str, Any] = {}
    if name in ("torch", "torch-compile", "onnx"):
        opts["threads"] = threads
    if name in ("torch", "torch-compile"):
        opts["device"] = args.device
    if name == "onnx" and args.cache_dir:
        opts["cache_dir"] = args.cache_dir
    if name == "tensorrt":
        opts = {"precision": args.precision, "calibration": args.calibration}
        if args.cache_dir:
            opts["cache_dir"] = args.cache_dir
    t0 = time.perf_counter()
    backend = make_backend(name, ck, **opts)
    backend.encode(crops[:1])
    backend.window(*(x[None] for x in backend.encode(crops[: ck.config.window_frames])))
    return backend, time.perf_counter() - t0


def ratios_vs_torch(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's speed-up over torch eager at the same thread count (from median latencies)."""
    base = {r["threads"]: r for r in runs if r["backend"] == "torch"}
    out = []
    for r in runs:
        ref = base.get(r["threads"]) or next(iter(base.values()), None)
        if ref is None:
            continue
        row = {
            "backend": r["backend"],
            "threads": r["threads"],
            "encoder": round(r["encoder_frames_per_s"] / ref["encoder_frames_per_s"], 3),
            "window": round(
                ref["window"]["1"]["p50_ms"] / max(r["window"]["1"]["p50_ms"], 1e-9), 3
            ),
            "stream_per_frame": round(r["stream_frames_per_s"] / ref["stream_frames_per_s"], 3),
            "naive_window": round(ref["naive_window_ms"] / max(r["naive_window_ms"], 1e-9), 3),
        }
        out.append(row)
    return out


# --- end to end --------------------------------------------------------------------------------


def run_end_to_end(args: argparse.Namespace, report: dict[str, Any], ck: Any) -> None:
    """The streaming pipeline (realtime/pipeline.py) on ``--video``, 1..N concurrent streams."""
    if args.video is None:
        report["end_to_end"] = {"skipped": "no --video given"}
        return
    threads = min(args.threads)
    _set_torch_threads(threads)
    crops = face_crops(ck.config.window_frames, ck.config.image_size)
    names = args.e2e_backends or [b for b in ("onnx", "torch") if b in args.backends][:1]
    runs = []
    for name in names:
        backend, _ = _build_backend(name, ck, args, threads, crops)
        for n in args.streams:
            log.info("end to end: %s, %d stream(s), pace %s", name, n, args.pace)
            res = pipeline_run(backend, ck, args.video, n, args.pace, args.stride)
            runs.append({"backend": name, "threads": threads, **res})
    report["end_to_end"] = runs


def camera_60fps_ms_per_frame(
    stages: dict[str, dict[str, float]], stride_frames: int, cores: int | None = None
) -> tuple[float, float]:
    """Per-frame cost of one 60 FPS camera (every slot a distinct frame) from the stage medians:
    (pipelined, serial). The source, align and infer threads overlap, so a frame costs the
    slowest thread's share, but never less than the total work spread over the cores."""
    from .pipeline import STAGES

    med = {k: stages.get(k, {}).get("p50_ms", 0.0) for k in STAGES}
    infer = med["encode"] + (med["window"] + med["merge"]) / stride_frames + med["emit"]
    serial = med["decode"] + med["align"] + infer
    cores = cores or os.cpu_count() or 1
    return max(med["decode"], med["align"], infer, serial / cores), serial


def pipeline_run(
    backend: Any, ck: Any, video: str, n_streams: int, pace: str, stride_frames: int
) -> dict[str, Any]:
    """``n_streams`` pipelines on the same clip at once, sharing one backend (and the CPU).

    Latency ("frame_score": capture of a window's newest frame -> its scores; "event": capture of
    the triggering frame -> event emitted) is only meaningful with ``pace="live"``: read as fast
    as possible, frames wait in the source's queue before they are processed.
    """
    from fesnet.model.merger import MergerConfig

    from .pipeline import STAGES, Pipeline
    from .sources import FileSource

    merger_cfg = (
        MergerConfig.from_dict(ck.merger)
        if ck.merger
        else MergerConfig(window_frames=ck.config.window_frames)
    )
    pipes = [
        Pipeline(FileSource(video, pace=pace, stream=f"s{i}"), backend, merger_cfg, stride_frames)
        for i in range(n_streams)
    ]
    t0 = time.perf_counter()
    for p in pipes:
        p.start()
    for p in pipes:
        while not p.join(timeout=0.5):
            pass
    wall_s = time.perf_counter() - t0
    summaries = [p.summary() for p in pipes]

    def merged(stage: str) -> dict[str, float]:
        return percentiles_ms(np.concatenate([p.stats.values_ms(stage) for p in pipes]) / 1e3)

    frames = sum(s["frames"] for s in summaries)
    src_fps = pipes[0].source.fps
    stages = {st: merged(st) for st in STAGES}
    per_frame_ms, serial_ms = camera_60fps_ms_per_frame(stages, stride_frames)
    return {
        "streams": n_streams,
        "pace": pace,
        "video": str(video),
        "source_fps": src_fps,
        "wall_s": round(wall_s, 3),
        "frames": frames,
        "frames_read": sum(s["frames_read"] for s in summaries),
        "dropped": sum(s["dropped"] for s in summaries),
        "windows": sum(s["windows"] for s in summaries),
        "events": sum(s["events"] for s in summaries),
        "faces_lost": sum(s["faces_lost"] for s in summaries),
        "sustained_frames_per_s": round(frames / wall_s, 2),
        "per_stream_frames_per_s": [round(s["fps"], 2) for s in summaries],
        "realtime_factor_source": (
            round(frames / wall_s / n_streams / src_fps, 3) if src_fps else None
        ),
        "est_60fps_camera_ms_per_frame": round(per_frame_ms, 3),
        "est_60fps_serial_ms_per_frame": round(serial_ms, 3),
        "est_60fps_realtime_factor": round(1000.0 / per_frame_ms / 60.0, 3)
        if per_frame_ms > 0
        else None,
        "stages": stages,
        "latency": {"frame_score": merged("frame_score_latency"), "event": merged("event_latency")},
    }


def pipeline_vs_flow(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Whole-pipeline comparison per frame of a 60 FPS camera: both pipelines decode and align
    the same way (measured stage medians); ours then encodes + 1/stride of a window head, theirs
    computes flow + strain (and would still run a CNN, not counted: theirs is a lower bound)."""
    e2e = report.get("end_to_end")
    if not isinstance(e2e, list):
        return []
    out = []
    for r in e2e:
        if r["streams"] != 1:
            continue
        front_ms = sum(r["stages"][s].get("p50_ms", 0.0) for s in ("decode", "align"))
        ours_ms = r["est_60fps_camera_ms_per_frame"]
        for f in report.get("optical_flow", []):
            flow_ms = front_ms + f["per_frame"]["p50_ms"]
            out.append(
                {
                    "backend": r["backend"],
                    "flow": f["method"],
                    "ours_ms_per_frame": round(ours_ms, 3),
                    "flow_pipeline_ms_per_frame_lower_bound": round(flow_ms, 3),
                    "ours_frames_per_s": round(1000.0 / ours_ms, 2),
                    "flow_pipeline_frames_per_s_upper_bound": round(1000.0 / flow_ms, 2),
                    "speedup": round(flow_ms / ours_ms, 3),
                }
            )
    return out


# --- plot --------------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    runs = report.get("backends", [])
    labels = [f"{r['backend']}\n{r['threads']}t" for r in runs]
    ax = axes[0, 0]
    x = np.arange(len(runs))
    ax.bar(x - 0.2, [r["encoder_frames_per_s"] for r in runs], 0.4, label="encoder frames/s")
    ax.bar(x + 0.2, [r["windows_per_s"]["1"] for r in runs], 0.4, label="window heads/s (B=1)")
    ax.set_xticks(x, labels)
    ax.set_yscale("log")
    ax.set_title("model throughput per backend")
    ax.legend()
    ax = axes[0, 1]
    ax.bar(x - 0.2, [r["cached_window_ms"] for r in runs], 0.4, label="cached features")
    ax.bar(x + 0.2, [r["naive_window_ms"] for r in runs], 0.4, label="naive re-encode")
    ax.set_xticks(x, labels)
    ax.set_ylabel("ms per window")
    ax.set_title(f"cached vs naive (stride {report['model']['stride_frames']})")
    ax.legend()
    ax = axes[1, 0]
    names = [f"ours {r['backend']} {r['threads']}t" for r in runs]
    fps = [r["stream_frames_per_s"] for r in runs]
    for f in report.get("optical_flow", []):
        names.append(f"{f['method']} flow")
        fps.append(f["frames_per_s"])
    ax.barh(np.arange(len(fps)), fps, color=["C0"] * len(runs) + ["C3"] * (len(fps) - len(runs)))
    ax.set_yticks(np.arange(len(fps)), names)
    ax.axvline(60, color="k", ls="--", lw=1, label="60 FPS")
    ax.set_xscale("log")
    ax.set_xlabel("frames/s (per-frame cost)")
    ax.set_title("ours vs optical-flow input stage")
    ax.legend()
    ax = axes[1, 1]
    e2e = report.get("end_to_end")
    if isinstance(e2e, list) and e2e:
        stages = sorted({s for r in e2e for s in r.get("stages", {})})
        for j, r in enumerate(e2e):
            p50 = [r["stages"].get(s, {}).get("p50_ms", 0) for s in stages]
            p99 = [r["stages"].get(s, {}).get("p99_ms", 0) for s in stages]
            xs = np.arange(len(stages)) + j * 0.8 / len(e2e)
            ax.bar(xs, p99, 0.8 / len(e2e), alpha=0.35, color=f"C{j}")
            ax.bar(xs, p50, 0.8 / len(e2e), color=f"C{j}", label=f"{r['backend']} x{r['streams']}")
        ax.set_xticks(np.arange(len(stages)), stages, rotation=20)
        ax.set_ylabel("ms (solid p50, light p99)")
        ax.set_title("pipeline stages")
        ax.legend()
    else:
        reason = e2e.get("skipped", "") if isinstance(e2e, dict) else ""
        ax.text(0.5, 0.5, f"end to end not run\n{reason}", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    fig.suptitle(f"fesnet-bench {report['started'][:19]}  ({report['machine']['processor']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- CLI ---------------------------------------------------------------------------------------


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda s: [kind(x) for x in s.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    from fesnet.model.backends import BACKENDS

    p = argparse.ArgumentParser(
        prog="fesnet-bench",
        description="Latency and throughput of the FESNet spotter on this machine (JSON + PNG).",
    )
    p.add_argument("--checkpoint", help="weights to load (default: the shipped checkpoint)")
    p.add_argument(
        "--config",
        choices=["tiny", "small", "paper"],
        help="benchmark random weights of this config instead of a checkpoint",
    )
    p.add_argument(
        "--backends",
        type=_csv(str),
        default=None,
        help=f"comma list from {','.join(BACKENDS)} (default: all available here)",
    )
    p.add_argument("--compile", action="store_true", help="also torch.compile (slow to build)")
    p.add_argument("--threads", type=_csv(int), default=[1], help="comma list, e.g. 1,2")
    p.add_argument("--streams", type=_csv(int), default=[1, 2], help="concurrent streams, 1,2,4")
    p.add_argument("--stride", type=int, default=8, help="window stride in frames (default 8)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per measured item")
    p.add_argument(
        "--flow",
        type=_csv(str),
        default=["farneback", "tvl1"],
        help="optical-flow baselines to time ('' for none)",
    )
    p.add_argument("--video", help="clip for the end-to-end pipeline runs")
    p.add_argument("--pace", choices=["live", "fast"], default="fast")
    p.add_argument(
        "--e2e-backends",
        type=_csv(str),
        default=None,
        help="backends for the pipeline runs (default: onnx if benchmarked, else torch)",
    )
    p.add_argument("--device", default="cpu", help="device of the torch backends (cpu, cuda)")
    p.add_argument("--precision", default="fp16", help="TensorRT precision: fp32|fp16|int8|fp8")
    p.add_argument("--calibration", help="TensorRT int8/fp8 calibration windows (.npz)")
    p.add_argument("--cache-dir", help="where exported/compiled graphs are cached")
    p.add_argument("--out", default="bench.json", help="JSON report path")
    p.add_argument("--plot", default=None, help="PNG path (default: next to --out)")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript"):  # the ONNX exporter logs every rewrite at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from fesnet.model.backends import available_backends

    if args.backends is None:
        args.backends = available_backends(include_compile=args.compile)
    if "torch" not in args.backends:
        args.backends = ["torch", *args.backends]  # the reference every ratio is relative to
    if args.stride < 1 or min(args.streams) < 1 or min(args.threads) < 1:
        print("fesnet-bench: --stride, --streams and --threads must be >= 1", file=sys.stderr)
        return 2
    cmd = " ".join(["fesnet-bench", *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "command": cmd,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(),
        "machine": machine_info(),
        "settings": {
            "backends": args.backends,
            "threads": args.threads,
            "streams": args.streams,
            "seconds_per_item": args.seconds,
            "pace": args.pace,
            "video": args.video,
            "device": args.device,
            "stride_frames": args.stride,
        },
    }
    ck = run_model_benchmarks(args, report)
    run_end_to_end(args, report, ck)
    report["pipeline_vs_flow"] = pipeline_vs_flow(report)
    report["machine"]["load_avg_1m_at_end"] = _load_avg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"wrote {out}")
    if not args.no_plot:
        png = plot(report, Path(args.plot) if args.plot else out.with_suffix(".png"))
        print(f"wrote {png}")
    return 0


def summary(report: dict[str, Any]) -> str:
    lines = ["backend         thr  enc f/s  win/s(B=1)  stream f/s  x torch  cached/naive"]
    ratios = {(r["backend"], r["threads"]): r for r in report.get("ratios_vs_torch", [])}
    for r in report.get("backends", []):
        k = (r["backend"], r["threads"])
        lines.append(
            f"{r['backend']:<15} {r['threads']:>3}  {r['encoder_frames_per_s']:>7.1f}  "
            f"{r['windows_per_s']['1']:>10.1f}  {r['stream_frames_per_s']:>10.1f}  "
            f"{ratios.get(k, {}).get('stream_per_frame', float('nan')):>7.2f}  "
            f"{r['cached_vs_naive']:>12.2f}"
        )
    for f in report.get("optical_flow", []):
        lines.append(f"{f['method'] + ' flow':<20} {f['frames_per_s']:>7.1f} frames/s")
    for v in report.get("pipeline_vs_flow", []):
        lines.append(
            f"pipeline ({v['backend']}) {v['ours_frames_per_s']:.1f} frames/s vs {v['flow']} "
            f"pipeline <= {v['flow_pipeline_frames_per_s_upper_bound']:.1f} ({v['speedup']:.2f}x)"
        )
    for name, why in report.get("unavailable", {}).items():
        lines.append(f"{name}: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
