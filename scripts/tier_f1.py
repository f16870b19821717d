"""The model tier's precision against fp32 on the held-out test split, scored as ``fesnet-eval``
scores it (interval F1, IoU >= 0.5): the done-when of the GPU tier asks fp16 to stay within 0.5
F1 points of fp32.

    python scripts/tier_f1.py --precisions fp32,fp16 --threads 1 --out tier-f1.json

Each video of the synthetic test split (fesnet-eval's default videos, read from the aligned
cache) goes through the tier on the CPU as one stream (model/tier_video.py) in each precision;
the windows are merged by the checkpoint's merger and scored per precision. Also per video: the
largest window-probability difference from the first precision, the share of windows whose
largest difference exceeds 1e-3, and whether the events and final intervals are the same.
torch's CPU autocast runs float16 (convolutions, linear layers and matmuls in half; the rings
hold float16 features) as the tier does on CUDA.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

COARSE_DIFF = 1e-3


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fesnet.model.datasets import SyntheticSetConfig, synthetic_split
    from fesnet.model.geometry import geometry_features
    from fesnet.model.inference import prediction_from_windows
    from fesnet.model.metrics import evaluate_videos, labels_to_intervals
    from fesnet.model.runtime import RuntimeConfig, load_runtime
    from fesnet.model.tier_run import make_tier
    from fesnet.model.tier_video import tier_video_windows

    rt = load_runtime(RuntimeConfig(checkpoint=args.checkpoint, backend="torch",
                                    threads=args.threads))
    videos = synthetic_split("test", args.cache_dir, SyntheticSetConfig(), workers=1)
    if args.videos:
        videos = videos[: args.videos]
    ck = rt.checkpoint
    out: dict[str, Any] = {"checkpoint": str(ck.path), "stride_frames": rt.stride_frames,
                           "videos": [v.video_id for v in videos], "threads": args.threads,
                           "precisions": {}}
    first: dict[str, tuple] = {}  # per video, the first precision's windows and events
    for precision in args.precisions.split(","):
        tier = make_tier("torch", ck, device="cpu", precision=precision, threads=args.threads,
                         max_streams=1)
        rows, per_video, t0 = [], [], time.perf_counter()
        for v in videos:
            geom = None if tier.geometry is None else geometry_features(v.landmarks, tier.geometry)
            starts, probs = tier_video_windows(tier, v.crops, rt.stride_frames, geom)
            pred = prediction_from_windows(starts, probs, rt.merger)
            rows.append((pred.intervals, labels_to_intervals(v.labels), len(v.labels)))
            per_video.append(_against_first(first, v.video_id, starts, probs, pred))
            print(f"{precision} {v.video_id}: {len(starts)} windows, {len(pred.intervals)} "
                  f"intervals", flush=True)
        table = evaluate_videos(rows)
        out["precisions"][precision] = {"tier": tier.name, "metrics": table.to_dict(),
                                        "f1_overall": table.f1_overall, "videos": per_video,
                                        "seconds": round(time.perf_counter() - t0, 1)}
    names = list(out["precisions"])
    base = out["precisions"][names[0]]["f1_overall"]
    out["f1_overall_minus_first"] = {n: round(out["precisions"][n]["f1_overall"] - base, 3)
                                     for n in names[1:]}
    return out


def _against_first(first: dict, vid: str, starts: list[int], probs: np.ndarray,
                   pred: Any) -> dict[str, Any]:
    """This precision's windows and events against the first precision's of the same video."""
    events = [dataclasses.replace(e, score=0.0) for e in pred.events]
    if vid not in first:
        first[vid] = (starts, probs, events, pred.intervals)
        return {"video": vid, "windows": len(starts), "intervals": len(pred.intervals)}
    s0, p0, e0, i0 = first[vid]
    assert starts == s0, f"{vid}: window starts differ between precisions"
    worst = np.abs(probs - p0).reshape(len(probs), -1).max(axis=1) if len(probs) else np.zeros(0)
    return {"video": vid, "windows": len(starts), "intervals": len(pred.intervals),
            "max_abs_diff": float(worst.max(initial=0.0)),
            "windows_over_1e-3": float(np.mean(worst > COARSE_DIFF)) if len(worst) else 0.0,
            "events_identical": events == e0, "intervals_identical": pred.intervals == i0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precisions", default="fp32,fp16", help="comma list; the first is the base")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--videos", type=int, default=0, help="only the first N videos (0: all)")
    p.add_argument("--out", type=Path, default=Path("tier-f1.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = run(args)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    for name, r in report["precisions"].items():
        f1 = r["metrics"]["f1"]
        print(f"{name}: overall F1 {f1['overall']:.2f} (ME {f1['ME']:.2f}, MaE {f1['MaE']:.2f}), "
              f"{r['seconds']:.0f} s")
    for name, d in report["f1_overall_minus_first"].items():
        print(f"{name} - {next(iter(report['precisions']))}: {d:+.2f} F1 points")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
