"""Choose the fused spotter's settings and merger on validation videos, and store them.

    python scripts/choose_fused.py --checkpoint model/checkpoints/fesnet_small_synthetic.pt \
        --set v2 --apply

The network's window probabilities of every validation video are computed once (the
checkpoint's own stride, float32, cached under ``--cache``); then a coordinate search moves one
setting of ``fused.FusedConfig`` at a time, each with the best of a small grid of merger
thresholds, until a full pass changes nothing. The objective is overall interval F1 on the
validation videos (people the checkpoint never trained on, in ``--set v2``). Nothing here reads
the test split or the independent suite. ``--apply`` writes the result into the checkpoint's
JSON under ``"fused"`` (settings, merger, validation F1 and this command), where ``--method
fused`` loads it from.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fesnet.model import checkpoint as ckpt_mod
from fesnet.model.datasets import SyntheticSetConfig, synthetic_split
from fesnet.model.fused import FusedConfig, fuse
from fesnet.model.graphs import weights_hash
from fesnet.model.inference import (
    gather_windows,
    predict_windows,
    prediction_from_windows,
    video_geometry,
)
from fesnet.model.merger import MergerConfig
from fesnet.model.metrics import MetricTable, evaluate_videos, labels_to_intervals
from fesnet.model.runtime import RuntimeConfig, load_runtime

log = logging.getLogger("choose_fused")

SEARCH: dict[str, tuple] = {
    "rule": ("geometric", "mean"),
    "net_weight": (1.0, 0.85, 0.7, 0.5, 0.3),
    "geo_k": (0.0, 1.0, 2.0, 3.0),
    "blink_iod": (None, 0.01, 0.02, 0.03),
    "talk_iod": (None, 0.005, 0.01, 0.02),
    "talk_reversals": (2, 3, 4),
}
ON = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
OFF_RATIO = (0.5, 0.7, 0.85)


def scored_videos(rt, videos, cache: Path) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """(starts, network window probs, geometry) per video, cached by checkpoint and video."""
    tag = weights_hash(rt.checkpoint.net)[:12]
    out = []
    for v in tqdm(videos, desc="network", unit="video"):
        path = cache / str(tag) / f"{v.video_id}-s{rt.stride_frames}.npz"
        if path.exists():
            d = np.load(path)
            out.append((list(d["starts"]), d["probs"], d["geom"]))
            continue
        geom = video_geometry(rt.backend, v)
        starts, probs = predict_windows(rt.backend, v.crops, rt.window_frames, rt.stride_frames,
                                        geom)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, starts=np.array(starts), probs=probs, geom=geom)
        out.append((starts, probs, geom))
    return out


def table(videos, scored, cfg: FusedConfig, mergers: list[MergerConfig]) -> list[MetricTable]:
    """One metric table per merger for the fused probabilities of ``cfg``."""
    fused = [fuse(p, gather_windows(g, s, p.shape[1]), cfg) for s, p, g in scored]
    truth = [(labels_to_intervals(v.labels), len(v.labels)) for v in videos]
    tables = []
    for m in mergers:
        rows = [(prediction_from_windows(s, f, m).intervals, t, n)
                for (s, _, _), f, (t, n) in zip(scored, fused, truth, strict=True)]
        tables.append(evaluate_videos(rows))
    return tables


def merger_grid(base: MergerConfig) -> list[MergerConfig]:
    return [replace(base, on_threshold=on, off_threshold=round(on * r, 4))
            for on in ON for r in OFF_RATIO]


def search(videos, scored, base: MergerConfig, start: FusedConfig):
    grid = merger_grid(base)

    def best_of(cfg: FusedConfig) -> tuple[float, MergerConfig, MetricTable]:
        tables = table(videos, scored, cfg, grid)
        i = int(np.argmax([t.f1_overall for t in tables]))
        return tables[i].f1_overall, grid[i], tables[i]

    cfg = start
    score, merger, tab = best_of(cfg)
    log.info("start %s: %.2f", asdict(cfg), score)
    for rnd in range(3):
        changed = False
        for name, values in SEARCH.items():
            for value in values:
                if getattr(cfg, name) == value:
                    continue
                cand = replace(cfg, **{name: value})
                s, m, t = best_of(cand)
                if s > score + 1e-9:
                    cfg, score, merger, tab, changed = cand, s, m, t, True
                    log.info("round %d: %s=%s -> %.2f (on %.2f off %.3f)", rnd, name, value, s,
                             m.on_threshold, m.off_threshold)
        if not changed:
            break
    return cfg, merger, tab


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--set", dest="synthetic_set", default="v2")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--cache", type=Path, default=Path(".cache/window-scores"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--apply", action="store_true", help="write the result into the checkpoint")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rt = load_runtime(RuntimeConfig(checkpoint=a.checkpoint, backend="onnx", threads=a.threads))
    val_set = SyntheticSetConfig.preset(a.synthetic_set)
    videos = synthetic_split("val", a.cache_dir, val_set, workers=1)
    scored = scored_videos(rt, videos, a.cache)
    net_only = table(videos, scored, FusedConfig(net_weight=1.0), [rt.merger])[0]
    cfg, merger, tab = search(videos, scored, rt.merger, FusedConfig(net_weight=1.0))
    doc = {
        "settings": cfg.to_dict(),
        "merger": {k: v for k, v in merger.to_dict().items() if k != "window_frames"},
        "chosen_on": f"validation of --set {a.synthetic_set} ({len(videos)} videos)",
        "val_overall_f1": round(tab.f1_overall, 2),
        "val_f1": {k: round(v, 2) for k, v in tab.f1.items()},
        "val_network_alone_f1": round(net_only.f1_overall, 2),
        "by": "python scripts/choose_fused.py " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]),
    }
    print(json.dumps(doc, indent=2))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=2) + "\n")
    if a.apply:
        ckpt_mod.update_meta(rt.checkpoint.path, fused=doc)
        print(f"stored in {ckpt_mod.sidecar(rt.checkpoint.path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
