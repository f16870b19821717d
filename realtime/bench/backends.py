"""Model-only benchmarks: every backend's encoder and window head, cached vs naive windows, and
the optical-flow input stage of published spotters, timed interleaved (same machine load)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .config import BenchConfig
from .timing import face_crops, median_s, percentiles_ms, time_interleaved

log = logging.getLogger(__name__)


def backend_calls(
    backend: Any, crops: np.ndarray, window_frames: int, batches: Sequence[int]
) -> dict[str, Callable[[], Any]]:
    """What is timed per backend: encoder on 1 and on T frames, window head on B = 1..N windows,
    and a naive window (encode all T frames, then the head)."""
    frames, one = crops[:window_frames], crops[:1]
    x_prime, x_atten = backend.encode(frames)
    geom = geometry_input(backend, window_frames)
    calls: dict[str, Callable[[], Any]] = {
        "encode_1": lambda: backend.encode(one),
        "encode_T": lambda: backend.encode(frames),
    }
    for b in batches:
        xp = np.repeat(x_prime[None], b, axis=0)
        xa = np.repeat(x_atten[None], b, axis=0)
        g = None if geom is None else np.repeat(geom, b, axis=0)
        calls[f"window_{b}"] = lambda xp=xp, xa=xa, g=g: backend.window(xp, xa, g)

    def naive() -> None:
        p, a = backend.encode(frames)
        backend.window(p[None], a[None], geom)

    calls["naive"] = naive
    return calls


def geometry_input(backend: Any, window_frames: int) -> np.ndarray | None:
    """A (1, T, G) geometry input for a backend whose network reads the geometry channel (its
    values do not change the cost), else None."""
    if getattr(backend, "geometry", None) is None:
        return None
    from fesnet.model.geometry import GEOMETRY_DIMS

    return np.zeros((1, window_frames, GEOMETRY_DIMS), np.float32)


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
    from ..optical_flow import OpticalFlowBaseline

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


def load_model(config: BenchConfig) -> tuple[Any, dict[str, Any]]:
    """A Checkpoint to benchmark: ``config.checkpoint``, else the shipped one, else random
    weights of ``config.model_config`` (speed does not depend on the weights' values)."""
    from fesnet.model import checkpoint as ckpt_mod
    from fesnet.model.fesnet import FESNet, FESNetConfig
    from fesnet.model.runtime import load_checkpoint

    if config.model_config is None or config.checkpoint is not None:
        ck = load_checkpoint(config.checkpoint)
        return ck, {"checkpoint": str(ck.path), "weights": "checkpoint"}
    import torch

    torch.manual_seed(0)
    cfg = FESNetConfig.named(config.model_config)
    net = FESNet(cfg).eval()
    ck = ckpt_mod.Checkpoint(net=net, config=cfg, meta={})
    return ck, {"checkpoint": None, "weights": f"random ({config.model_config})"}


def run_model_benchmarks(config: BenchConfig, report: dict[str, Any]) -> Any:
    """Backends, cached vs naive and optical flow into ``report``; returns the Checkpoint."""
    from fesnet.model.runtime import LoadError, stride_of
    from fesnet.model.tensorrt_export import tensorrt_unavailable_reason

    ck, model_info = load_model(config)
    cfg = ck.config
    stride = stride_of(ck, config.stride_frames)
    report["model"] = {
        **model_info,
        "window_frames": cfg.window_frames,
        "stride_frames": stride,
        "config": cfg.to_dict(),
    }
    crops = face_crops(max(cfg.window_frames + 1, 64), cfg.image_size)
    batches = list(range(1, max(config.streams) + 1))
    runs, flows, unavailable = [], [], {}
    for threads in config.threads:  # one group per thread count, its backends interleaved
        set_torch_threads(threads)
        group: dict[str, tuple[Any, float]] = {}
        for name in config.backends:
            if name in unavailable or (name == "tensorrt" and threads != config.threads[0]):
                continue  # TensorRT: thread counts do not apply
            try:
                group[name] = build_timed_backend(name, ck, config, threads, crops)
            except LoadError as e:
                unavailable[name] = str(e.__cause__ or e)
        calls: dict[tuple[str, str], Callable[[], Any]] = {}
        for name, (backend, _) in group.items():
            for item, fn in backend_calls(backend, crops, cfg.window_frames, batches).items():
                calls[(name, item)] = fn
        log.info("timing %s at %d thread(s), interleaved", ", ".join(group), threads)
        samples: dict[tuple[str, str], list[float]] = {}
        for item in dict.fromkeys(item for _, item in calls):  # one interleaved loop per item
            same = {k: fn for k, fn in calls.items() if k[1] == item}
            samples.update(time_interleaved(same, config.seconds * len(same)))
        if threads == config.threads[0] and config.flow:
            fl = {("flow", m): flow_call(m, crops, threads) for m in config.flow}
            samples.update(time_interleaved(fl, config.seconds * len(fl), min_rounds=10))
            flows = [summarize_flow(m, samples[("flow", m)]) for m in config.flow]
        for name, (_, setup_s) in group.items():
            own = {item: v for (n, item), v in samples.items() if n == name}
            runs.append(
                {
                    "backend": name,
                    "threads": threads,
                    "setup_s": round(setup_s, 2),
                    **summarize_backend(own, cfg.window_frames, stride, batches),
                }
            )
    if "tensorrt" not in config.backends:
        reason = tensorrt_unavailable_reason(config.precision)
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


def set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def build_timed_backend(
    name: str, ck: Any, config: BenchConfig, threads: int, crops: np.ndarray
) -> tuple[Any, float]:
    """The backend ``name`` loaded as every program loads it (``fesnet.model.runtime``), with the
    bench's options; returns it and its setup time (export, compile or engine load, and the first
    call)."""
    from fesnet.model.runtime import Runtime, RuntimeConfig

    opts: dict[str, Any] = {}
    if name in ("torch", "torch-compile"):
        opts["device"] = config.device
    if name in ("onnx", "onnx-int8") and config.cache_dir:
        opts["cache_dir"] = config.cache_dir
    if name == "tensorrt":
        opts = {"precision": config.precision, "calibration": config.calibration}
        if config.cache_dir:
            opts["cache_dir"] = config.cache_dir
    t0 = time.perf_counter()
    load = RuntimeConfig(backend=name, threads=threads, stride_frames=config.stride_frames,
                         backend_options=opts)
    backend = Runtime.from_checkpoint(ck, load).backend
    backend.encode(crops[:1])
    t = ck.config.window_frames
    backend.window(*(x[None] for x in backend.encode(crops[:t])), geometry_input(backend, t))
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
