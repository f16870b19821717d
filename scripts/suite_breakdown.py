"""Where the methods win and lose on the independent suite: recall by stratum, expression size
and kind, and what each false event overlaps (a blink, talking, another expression, nothing),
by stratum and talking.

Reads what ``fesnet-eval --suite independent --csv PRED.csv`` wrote (predictions in source
frames) and the rendered clips' JSON (labels, expressions with their templates and peaks,
blink and talking ranges). A prediction matches a label of its class at IoU >= 0.5 on source
frames (``fesnet-eval`` scores on the 60 Hz slot timeline, so counts can differ by one or two).

    python scripts/suite_breakdown.py out/suite_independent.csv
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

from fesnet.model.metrics import interval_iou
from fesnet.model.suite.clips import clip_path, suite_clips
from fesnet.model.suite.motion import STRATA

REGION = {"brow": "brows", "lid": "eyes", "cheek": "cheeks", "nose": "nose"}


def region_of(templates: list) -> str:
    name = templates[0][0]
    return next((v for k, v in REGION.items() if k in name), "mouth/jaw")


def size_of(peak: float, label: int, stratum: str) -> str:
    """Which half of its stratum's range an expression's peak lies in."""
    st = STRATA[stratum]
    lo, hi = st.me_peak_iod if label == 1 else st.mae_peak_iod
    mid = (lo + hi) / 2
    return f"< {mid:.3g} IOD" if peak < mid else f">= {mid:.3g} IOD"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("predictions", type=Path)
    p.add_argument("--suite-cache", type=Path, default=Path(".cache"))
    a = p.parse_args()
    meta, specs = {}, {s.video_id: s for s in suite_clips()}
    for vid, spec in specs.items():
        meta[vid] = json.loads(clip_path(spec, a.suite_cache).with_suffix(".json").read_text())
    preds: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    with a.predictions.open() as f:
        for r in csv.DictReader(f):
            label = 1 if r["type"] == "ME" else 2
            preds[(r["method"], r["vid"])].append((int(r["pred_onset"]), int(r["pred_offset"]),
                                                   label))
    methods = sorted({m for m, _ in preds})
    hits: dict[str, Counter] = {m: Counter() for m in methods}
    totals: Counter = Counter()
    false: dict[str, Counter] = {m: Counter() for m in methods}
    for vid, doc in meta.items():
        spec = specs[vid]
        fps = spec.fps
        group = f"{spec.stratum}, {'talking' if spec.talking else 'calm'}"
        exprs = doc["expressions"]
        for e in exprs:
            size = size_of(e["peak_iod"], e["label"], spec.stratum)
            key = (spec.stratum, "ME" if e["label"] == 1 else "MaE", region_of(e["templates"]),
                   size)
            totals[key] += 1
            for m in methods:
                iv = (e["onset"], e["offset"], e["label"])
                if any(p[2] == iv[2] and interval_iou(p, iv) >= 0.5 for p in preds[(m, vid)]):
                    hits[m][key] += 1
        for m in methods:
            for p in preds[(m, vid)]:
                if any(p[2] == e["label"] and interval_iou(p, (e["onset"], e["offset"],
                       e["label"])) >= 0.5 for e in exprs):
                    continue
                near = int(0.2 * fps)
                what = "nothing"
                if any(p[0] <= e["offset"] + near and e["onset"] - near <= p[1] for e in exprs):
                    what = "an expression (wrong timing or class)"
                elif any(p[0] <= b + near and a_ - near <= p[1] for a_, b in doc["talking"]):
                    what = "talking"
                elif any(p[0] <= b + near and a_ - near <= p[1] for a_, b in doc["blinks"]):
                    what = "a blink"
                false[m][(group, "ME" if p[2] == 1 else "MaE", what)] += 1
    print("| stratum | class | first template's region | peak | true | " +
          " | ".join(f"{m} found" for m in methods) + " |")
    print("|---|---|---|---|---:|" + "---:|" * len(methods))
    for key in sorted(totals):
        print(f"| {' | '.join(key)} | {totals[key]} | " +
              " | ".join(str(hits[m][key]) for m in methods) + " |")
    print("\n| method | clips | false event | overlaps (within 0.2 s) | count |\n"
          "|---|---|---|---|---:|")
    for m in methods:
        for (group, cls, what), n in sorted(false[m].items()):
            print(f"| {m} | {group} | {cls} | {what} | {n} |")


if __name__ == "__main__":
    main()
