"""Streaming cost of two checkpoints, measured in one run (issue 12: a new model may cost at most
1.25x the previous one per frame).

    python scripts/compare_checkpoints.py OLD.pt NEW.pt --rounds 3 --out docs/checkpoint_cost.json

Both run the whole streaming pipeline (align, encode, geometry, window head, merger) on the same
clip, alternately (old, new, old, new, ...), so both see the same machine load. Reports each
stage's median over the rounds and the ratio new / old of the estimated cost per 60 FPS frame.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from fesnet.model.runtime import load_checkpoint
from fesnet.realtime.bench.backends import build_timed_backend, set_torch_threads
from fesnet.realtime.bench.config import BenchConfig
from fesnet.realtime.bench.end_to_end import pipeline_run
from fesnet.realtime.bench.timing import face_crops, load_avg
from fesnet.realtime.stats import STAGES

SAMPLE = Path(__file__).resolve().parents[1] / "realtime" / "assets" / "sample.mp4"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path, help="the previous checkpoint (.pt, its .json beside it)")
    p.add_argument("new", type=Path, help="the candidate checkpoint")
    p.add_argument("--video", type=Path, default=SAMPLE)
    p.add_argument("--backend", default="onnx")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3, help="runs of each checkpoint, alternating")
    p.add_argument("--out", type=Path, help="JSON report")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error("--rounds must be >= 1")
    set_torch_threads(a.threads)
    cfg = BenchConfig(backends=(a.backend,), threads=(a.threads,))
    models = {}
    for name, path in (("old", a.old), ("new", a.new)):
        ck = load_checkpoint(path)
        crops = face_crops(ck.config.window_frames, ck.config.image_size)
        backend, _ = build_timed_backend(a.backend, ck, cfg, a.threads, crops)
        models[name] = (ck, backend)
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(a.rounds):
        for name, (ck, backend) in models.items():
            res = pipeline_run(backend, ck, str(a.video), 1, "fast", a.stride)
            runs[name].append(res)
            print(f"round {r + 1} {name}: {res['est_60fps_camera_ms_per_frame']:.2f} ms/frame "
                  f"(load {load_avg()})", flush=True)  # fmt: skip
    report = {"video": str(a.video), "backend": a.backend, "threads": a.threads,
              "rounds": a.rounds, "checkpoints": {"old": str(a.old), "new": str(a.new)}}
    for name, rs in runs.items():
        report[name] = {
            "ms_per_frame_p50": statistics.median(x["est_60fps_camera_ms_per_frame"] for x in rs),
            "serial_ms_per_frame_p50": statistics.median(
                x["est_60fps_serial_ms_per_frame"] for x in rs),
            "stages_p50_ms": {st: statistics.median(x["stages"][st].get("p50_ms", 0.0) for x in rs)
                              for st in STAGES},
        }
    report["ratio_new_over_old"] = round(
        report["new"]["ms_per_frame_p50"] / report["old"]["ms_per_frame_p50"], 3)
    report["serial_ratio_new_over_old"] = round(
        report["new"]["serial_ms_per_frame_p50"] / report["old"]["serial_ms_per_frame_p50"], 3)
    print(json.dumps(report, indent=1))
    if a.out:
        a.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
