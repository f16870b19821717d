"""Streaming cost of two checkpoints, measured in one run (issue 12: a new model may cost at most
1.25x the previous one per frame).

    python -m fesnet.realtime.bench.checkpoints OLD.pt NEW.pt --rounds 3 --out cost.json

Two measures, both taken alternately (old, new, old, new, ...) so that both see the same load:

- *model cost per streamed frame*: one encode, the geometry update, and 1/stride of a window
  head call, interleaved call by call (``time_interleaved``): what the checkpoint changes;
- *pipeline*: the whole streaming pipeline (align, encode, geometry, window head, merger) on the
  same clip, per round; its stage medians and the estimated cost per 60 FPS frame. On a loaded
  2-core machine the align thread competes with the infer thread, so this one is noisier.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from fesnet.model.geometry import GeometryTracker
from fesnet.model.runtime import load_checkpoint, stride_of
from fesnet.realtime.bench.backends import build_timed_backend, geometry_input, set_torch_threads
from fesnet.realtime.bench.config import BenchConfig
from fesnet.realtime.bench.end_to_end import pipeline_run
from fesnet.realtime.bench.timing import face_crops, load_avg, median_s, time_interleaved
from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.stats import STAGES


def model_cost(
    models: dict, strides: dict[str, int], seconds: float = 20.0
) -> dict[str, dict[str, float]]:
    """Median ms per streamed frame of each model's encode, geometry update and window share
    (a window head call every ``strides[name]`` slots)."""
    rng = np.random.default_rng(0)
    calls = {}
    for name, (ck, backend) in models.items():
        t = ck.config.window_frames
        crops = face_crops(t, ck.config.image_size)
        xp, xa = (x[None] for x in backend.encode(crops))
        geom = geometry_input(backend, t)
        calls[(name, "encode")] = lambda b=backend, c=crops[:1]: b.encode(c)
        calls[(name, "window")] = lambda b=backend, xp=xp, xa=xa, g=geom: b.window(xp, xa, g)
        if geom is not None:
            tracker = GeometryTracker(backend.geometry)
            pts = rng.uniform(20, 90, (468, 2))
            calls[(name, "geometry")] = lambda tr=tracker, p=pts: tr.update(p)
    samples = time_interleaved(calls, seconds)
    out: dict[str, dict[str, float]] = {}
    for name in models:
        enc = median_s(samples[(name, "encode")]) * 1e3
        win = median_s(samples[(name, "window")]) * 1e3 / strides[name]
        geo = median_s(samples[(name, "geometry")]) * 1e3 if (name, "geometry") in samples else 0
        out[name] = {"encode": round(enc, 3), "geometry": round(geo, 3),
                     "window_share": round(win, 3), "total": round(enc + geo + win, 3)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path, help="the previous checkpoint (.pt, its .json beside it)")
    p.add_argument("new", type=Path, help="the candidate checkpoint")
    p.add_argument("--video", type=Path, default=SAMPLE_CLIP)
    p.add_argument("--backend", default="onnx")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stride", type=int, help="window stride of both (default: each "
                   "checkpoint's own, as the spotter runs it)")
    p.add_argument("--rounds", type=int, default=3,
                   help="pipeline runs of each checkpoint, alternating (0: the model cost only)")
    p.add_argument("--out", type=Path, help="JSON report")
    a = p.parse_args(argv)
    if a.rounds < 0:
        p.error("--rounds must be >= 0")
    set_torch_threads(a.threads)
    cfg = BenchConfig(backends=(a.backend,), threads=(a.threads,))
    models = {}
    for name, path in (("old", a.old), ("new", a.new)):
        ck = load_checkpoint(path)
        crops = face_crops(ck.config.window_frames, ck.config.image_size)
        backend, _ = build_timed_backend(a.backend, ck, cfg, a.threads, crops)
        models[name] = (ck, backend)
    strides = {name: stride_of(ck, a.stride) for name, (ck, _) in models.items()}
    model_ms = model_cost(models, strides)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(a.rounds):
        for name, (ck, backend) in models.items():
            res = pipeline_run(backend, ck, str(a.video), 1, "fast", strides[name])
            runs[name].append(res)
            print(f"round {r + 1} {name}: {res['est_60fps_camera_ms_per_frame']:.2f} ms/frame "
                  f"(load {load_avg()})", flush=True)
    report = {"video": str(a.video), "backend": a.backend, "threads": a.threads,
              "rounds": a.rounds, "checkpoints": {"old": str(a.old), "new": str(a.new)},
              "strides": strides,
              "model_ms_per_frame": model_ms,
              "model_ratio_new_over_old": round(model_ms["new"]["total"] / model_ms["old"]["total"],
                                                3)}
    for name, rs in runs.items():
        if not rs:
            continue
        report[name] = {
            "ms_per_frame_p50": statistics.median(x["est_60fps_camera_ms_per_frame"] for x in rs),
            "serial_ms_per_frame_p50": statistics.median(
                x["est_60fps_serial_ms_per_frame"] for x in rs),
            "stages_p50_ms": {st: statistics.median(x["stages"][st].get("p50_ms", 0.0) for x in rs)
                              for st in STAGES},
        }
    if a.rounds:
        report["ratio_new_over_old"] = round(
            report["new"]["ms_per_frame_p50"] / report["old"]["ms_per_frame_p50"], 3)
        report["serial_ratio_new_over_old"] = round(
            report["new"]["serial_ms_per_frame_p50"] / report["old"]["serial_ms_per_frame_p50"], 3)
    print(json.dumps(report, indent=1))
    if a.out:
        a.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
