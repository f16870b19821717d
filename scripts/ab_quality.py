"""A/B of the spotting candidates on the held-out test split, in one run (issue 12).

    python scripts/ab_quality.py --minutes 20 --out runs/ab

Every candidate is scored on the same held-out videos (people never trained on; half of them in
a motion family never trained on), with the same merger code, and its merger thresholds chosen
on the validation videos of the training people, never on the test videos:

- ``peer``: the training-free landmark peer (model/peer.py), its k chosen on validation;
- ``shipped``: the checkpoint shipped before this work (pixels only), with its fitted merger;
- ``head``: the shipped encoder with its window head retrained on the new training set, pixels
  only (what the data alone does);
- ``head+geom``: the same, with the geometry channel against the running neutral and against
  the window's first frame;
- ``head+geom(window)``: the geometry channel against the window's first frame only (what the
  neutral anchor adds).

Window scores come from cached float16 encoder features (model/head.py); ``fesnet-eval`` on the
saved checkpoints gives the float32 numbers. Writes OUT/results.json and OUT/results.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from fesnet.model import checkpoint
from fesnet.model.backends import OnnxBackend
from fesnet.model.datasets import SyntheticSetConfig, synthetic_families, synthetic_split
from fesnet.model.geometry import GeometryConfig
from fesnet.model.head import (
    FeatureVideo,
    feature_videos,
    score_feature_video,
    threshold_grid,
    train_head,
    with_geometry,
)
from fesnet.model.inference import prediction_from_windows, score_windows, window_starts
from fesnet.model.merger import MergerConfig
from fesnet.model.metrics import MetricTable, evaluate_videos, labels_to_intervals
from fesnet.model.peer import LandmarkPeer, PeerConfig
from fesnet.model.runtime import stride_of

log = logging.getLogger("ab_quality")


def peer_windows(f: FeatureVideo, k: float, stride: int) -> tuple[list[int], object]:
    starts = window_starts(len(f), 32, stride)
    probs = score_windows(LandmarkPeer(PeerConfig(k=k)), f.x_prime[:, :0], f.x_atten[:, :0],
                          f.geom, starts, 32)
    return starts, probs


def table_of(scored, videos: list[FeatureVideo], cfg: MergerConfig) -> MetricTable:
    rows = []
    for (starts, probs), f in zip(scored, videos, strict=True):
        pred = prediction_from_windows(starts, probs, cfg)
        rows.append((pred.intervals, labels_to_intervals(f.labels), len(f)))
    return evaluate_videos(rows)


def subsets(test_f: list[FeatureVideo], families: dict[str, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"all": list(range(len(test_f)))}
    for i, f in enumerate(test_f):
        out.setdefault(families[f.video_id], []).append(i)
    return out


def report(name: str, scored, test_f, cfg: MergerConfig, groups) -> dict:
    row = {}
    for group, idx in groups.items():
        t = table_of([scored[i] for i in idx], [test_f[i] for i in idx], cfg)
        row[group] = {"ME": t.f1["ME"], "MaE": t.f1["MaE"], "overall": t.f1_overall,
                      "counts": {k: [v.tp, v.fp, v.fn] for k, v in t.counts.items()}}
    log.info("%s: %s", name, {g: round(r["overall"], 1) for g, r in row.items()})
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=20.0, help="head training per candidate")
    p.add_argument("--out", type=Path, default=Path("runs/ab"))
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--feature-cache", type=Path, default=Path(".cache/features"))
    p.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="the head stage's seed (which windows, "
                   "dropout); the data and the start weights stay the same")
    p.add_argument("--previous", type=Path, default=checkpoint.DEFAULT_CHECKPOINT,
                   help="the pixel-only checkpoint the candidates start from (default: the shipped "
                   "one; since the geometry channel shipped, pass the one before it: git show "
                   "<commit>:model/checkpoints/fesnet_small_synthetic.pt)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    cfg = SyntheticSetConfig()
    splits = {s: synthetic_split(s, a.cache_dir, cfg, workers=2) for s in ("train", "val", "test")}
    shipped = checkpoint.load(a.previous)
    if shipped.net.cfg.geometry_dims:
        p.error(f"{a.previous} already reads the geometry channel; --previous takes the "
                "pixel-only checkpoint the candidates start from")
    encoder = OnnxBackend.from_net(shipped.net, threads=a.threads)
    feats = {s: feature_videos(shipped.net, v, GeometryConfig(), a.feature_cache, encoder)
             for s, v in splits.items()}
    groups = subsets(feats["test"], synthetic_families("test", cfg))
    stride = stride_of(shipped)
    results_path = a.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    want = set(a.only) if a.only else None

    def run(name: str) -> bool:
        return want is None or name in want

    if run("peer"):
        best = None
        for k in (2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0):
            pc = PeerConfig(k=k, k_off=k - 1.5)
            t = table_of([peer_windows(f, k, stride) for f in feats["val"]], feats["val"],
                         pc.merger_config())
            log.info("peer k=%.1f validation overall %.1f", k, t.f1_overall)
            if best is None or t.f1_overall > best[0]:
                best = (t.f1_overall, pc)
        assert best is not None
        pc = best[1]
        scored = [peer_windows(f, pc.k, stride) for f in feats["test"]]
        results["peer"] = {"k": pc.k, "val_overall": best[0],
                           **report("peer", scored, feats["test"], pc.merger_config(), groups)}

    if run("shipped"):
        mcfg = MergerConfig.from_dict(shipped.merger)
        scored = [score_feature_video(shipped.net, f, stride) for f in feats["test"]]
        results["shipped"] = report("shipped", scored, feats["test"], mcfg, groups)

    candidates = {
        "head+geom": lambda net: with_geometry(net),
        "head": lambda net: net,
        "head+geom(window)": lambda net: with_geometry(net, reference="window"),
    }
    for name, make in candidates.items():
        if not run(name):
            continue
        net = make(copy.deepcopy(shipped.net))
        net, mcfg, table, history = train_head(
            net, feats["train"], feats["val"], minutes=a.minutes, stride_frames=stride,
            seed=a.seed, evals=8,
        )
        assert mcfg is not None and table is not None
        out = a.out / name.replace("+", "_").replace("(", "_").replace(")", "")
        meta = {"merger": mcfg.to_dict(), "stride_frames": stride, "validation": table.to_dict(),
                "head_history": history, "trained_on": {"data": "synthetic", **cfg.__dict__}}
        if net.cfg.geometry_dims:
            meta["geometry"] = GeometryConfig().to_dict()
        checkpoint.save(out / "best.pt", net, meta)
        scored = [score_feature_video(net, f, stride) for f in feats["test"]]
        results[name] = {"val_overall": table.f1_overall, "checkpoint": str(out / "best.pt"),
                         **report(name, scored, feats["test"], mcfg, groups)}
        # The stateful-merger candidate: the same window scores, with a MaE under way allowed
        # to bridge longer dips; its thresholds and bridge chosen on validation again.
        val_scored = [score_feature_video(net, f, stride) for f in feats["val"]]
        hold = max(
            (replace(c, mae_gap_merge_s=g) for c in threshold_grid(mcfg) for g in (0.1, 0.3, 0.6)),
            key=lambda c: table_of(val_scored, feats["val"], c).f1_overall,
        )
        results[f"{name}+hold"] = {"merger": hold.to_dict(),
                                   **report(f"{name}+hold", scored, feats["test"], hold, groups)}
        results_path.write_text(json.dumps(results, indent=1))
    results_path.write_text(json.dumps(results, indent=1))
    (a.out / "results.md").write_text(markdown(results, list(groups)))
    print(markdown(results, list(groups)))


def markdown(results: dict, groups: list[str]) -> str:
    head = "| candidate | " + " | ".join(f"{g} ME / MaE / overall" for g in groups) + " |"
    lines = [head, "|---|" + "---:|" * len(groups)]
    for name, r in results.items():
        cells = []
        for g in groups:
            x = r.get(g)
            cells.append("" if x is None else f"{x['ME']:.1f} / {x['MaE']:.1f} / "
                                               f"**{x['overall']:.1f}**")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
