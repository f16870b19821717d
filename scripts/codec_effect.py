"""What the video codec between a webcam and the spotter costs each method: the same validation
videos delivered as rendered (a JPEG of each frame) and through H.264 at a webcam's bitrate.

A diagnostic A/B on the synthetic set's validation videos (nothing is chosen on it). Each of the
first ``--videos`` validation videos of ``--set`` is rendered twice from the same spec and seed,
once as the set has it and once with ``SyntheticSpec.codec`` fixed at each ``--bpp`` (bits per
pixel per frame) and ``--keyframe-s`` (model/data/codec.py: libx264, no B-frames, one frame in
and one out, as a video call delivers it); every copy goes through the product's preprocessing
(cached by video id) and every method, with each method's own merger. Prints one table per
method: interval F1 per class, TP / FP / FN and ME predicted / right / true.

    python scripts/codec_effect.py --set v3 --videos 12 --bpp 0.06 --json out/codec_effect.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from fesnet.model.data.codec import CodecSpec
from fesnet.model.data.preprocess import preprocess_synthetic
from fesnet.model.datasets import SYNTHETIC_SETS, SyntheticSetConfig, synthetic_jobs
from fesnet.model.evaluate import methods_for
from fesnet.model.methods import evaluate
from fesnet.model.metrics import MetricTable, evaluate_videos
from fesnet.model.runtime import METHODS, add_runtime_arguments


def _row(method: str, delivery: str, t: MetricTable) -> str:
    c, me = t.counts["overall"], t.counts["ME"]
    return (f"| {method} | {delivery} | {t.f1['ME']:.1f} | {t.f1['MaE']:.1f} "
            f"| **{t.f1['overall']:.1f}** | {c.tp} / {c.fp} / {c.fn} "
            f"| {me.tp + me.fp} / {me.tp} / {me.tp + me.fn} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", dest="synthetic_set", default="v3", choices=SYNTHETIC_SETS)
    p.add_argument("--videos", type=int, default=12,
                   help="how many validation videos (the first ones of the set's list)")
    p.add_argument("--bpp", type=float, nargs="+", default=[0.06],
                   help="H.264 bits per pixel per frame, one run each (a 640x480 video call at "
                   "30 FPS: 0.03-0.15)")
    p.add_argument("--keyframe-s", type=float, default=2.0, help="seconds between keyframes")
    p.add_argument("--method", choices=["all", *METHODS], default="all")
    add_runtime_arguments(p, backend="onnx", method=False)
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--json", type=Path, help="also write every number as JSON")
    a = p.parse_args(argv)
    if a.videos < 1 or min(a.bpp) <= 0 or a.keyframe_s <= 0:
        raise SystemExit("error: --videos, --bpp and --keyframe-s must be positive")
    methods = methods_for(a)
    jobs = [j for j in synthetic_jobs("val", SyntheticSetConfig.preset(a.synthetic_set))
            if j[1].codec is None][: a.videos]
    deliveries = {"as rendered": None}
    for bpp in a.bpp:
        deliveries[f"H.264 {bpp:g} bpp"] = CodecSpec((bpp, bpp), (a.keyframe_s, a.keyframe_s))
    videos = {}
    for name, codec in deliveries.items():
        videos[name] = [preprocess_synthetic(identity, replace(spec, codec=codec), seed,
                                             cache_dir=a.cache_dir)
                        for identity, spec, seed in tqdm(jobs, desc=name, unit="video")]
    doc: dict = {"set": a.synthetic_set, "videos": [v.video_id for v in videos["as rendered"]],
                 "keyframe_s": a.keyframe_s, "runs": {}}
    lines = ["| method | delivery | ME F1 | MaE F1 | overall F1 | TP / FP / FN "
             "| ME predicted / right / true |", "|---|---|---:|---:|---:|---|---|"]
    for m in methods:
        for name, vids in videos.items():
            t = evaluate_videos(evaluate(m, vids))
            doc["runs"].setdefault(m.name, {})[name] = t.to_dict()
            lines.append(_row(m.name, name, t))
    print(f"\n{len(jobs)} validation videos of --set {a.synthetic_set}, keyframe every "
          f"{a.keyframe_s:g} s:\n")
    print("\n".join(lines))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
