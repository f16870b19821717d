"""Evaluate a checkpoint beside the training-free peer, on the same videos, in one run.

    fesnet-eval        # shipped checkpoint and the landmark peer on the held-out test split
    fesnet-eval --method fesnet --checkpoint runs/x/best.pt --csv out/pred.csv
    fesnet-eval --data casme2 --root /data/CASME2 --fold 0 --checkpoint runs/x/best.pt
    fesnet-eval --suite both      # the independent suite and the real clips (docs/SUITE.md)

Predictions come from ``inference.spot_video``: the streaming spotter's model functions and
merger, run offline. The peer (model/peer.py) runs through the same function and merger. Metrics
are computed on the 60 Hz slot timeline; the CSV maps slots back to source frame indices. On the
synthetic test split the tables are also given per motion family, so the family held out of
training is reported apart from the ones trained on. Every registered method runs
(``methods.load_methods``); ``--suite`` hands the loaded methods to ``suite_eval``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

from .datasets import SyntheticSetConfig, real_split, synthetic_families, synthetic_split
from .methods import Method, evaluate, load_methods
from .metrics import MetricTable, evaluate_videos
from .runtime import METHODS, LoadError, add_runtime_arguments, runtime_config

log = logging.getLogger(__name__)

CSV_FIELDS = ["method", "vid", "pred_onset", "pred_offset", "type", "score", "onset_s", "offset_s"]


def grouped_tables(
    rows: list[tuple[list, list, int]], groups: dict[str, list[int]]
) -> dict[str, MetricTable]:
    return {g: evaluate_videos([rows[i] for i in idx]) for g, idx in groups.items() if idx}


def side_by_side(tables: dict[str, dict[str, MetricTable]]) -> str:
    """One markdown table: every method x every video group, ME / MaE / overall F1 and counts."""
    lines = ["| method | videos | ME F1 | MaE F1 | overall F1 | TP / FP / FN | Edit | Acc |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for name, by_group in tables.items():
        for group, t in by_group.items():
            c = t.counts["overall"]
            lines.append(f"| {name} | {group} ({t.n_videos}) | {t.f1['ME']:.1f} | "
                         f"{t.f1['MaE']:.1f} | **{t.f1_overall:.1f}** | {c.tp} / {c.fp} / {c.fn} "
                         f"| {t.edit:.1f} | {t.acc:.1f} |")
    return "\n".join(lines) + "\n"


def methods_for(a: argparse.Namespace) -> list[Method]:
    """The methods ``--method`` names: every registered one (``all``; ``both`` is its old
    name) or one of them."""
    names = METHODS if a.method in ("all", "both") else (a.method,)
    try:
        return load_methods(runtime_config(a), names)
    except LoadError as e:
        raise SystemExit(f"error: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fesnet-eval",
        description="Evaluate FESNet and the training-free landmark peer on the same videos: "
        "interval F1 (IoU >= 0.5, MEGC), Edit, Acc, per motion family on the synthetic test "
        "split; writes per-video predictions as CSV (method, vid, pred_onset, pred_offset, ...).",
    )
    p.add_argument("--method", choices=["all", "both", *METHODS], default="all",
                   help="which spotter(s) to evaluate (default: all, side by side)")
    add_runtime_arguments(p, backend="torch", threads=None, method=False)
    p.add_argument("--data", default="synthetic", choices=["synthetic", "casme2", "sammlv"])
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="synthetic split (val: the training people; thresholds are chosen there)")
    p.add_argument("--root", type=Path, help="dataset folder for casme2 / sammlv")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="0 = leave-one-subject-out")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--csv", type=Path, default=Path("out/predictions.csv"))
    p.add_argument("--json", type=Path, help="also write the metric tables as JSON")
    p.add_argument("--suite", choices=["independent", "real", "both"],
                   help="instead of --data: the independent suite (clips from a renderer that "
                   "shares no code with training; F1 per class and per video) and/or real "
                   "unlabelled clips (events per minute of tracked face); docs/SUITE.md")
    p.add_argument("--suite-cache", type=Path, default=Path(".cache"),
                   help="where the suite's rendered clips are cached (<dir>/suite/v<version>)")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    methods = methods_for(a)
    if a.suite:
        from .suite_eval import run_suites

        run_suites(a.suite, methods, a.cache_dir, a.suite_cache, a.csv, a.json)
        return
    groups: dict[str, list[int]]
    if a.data == "synthetic":
        cfg = SyntheticSetConfig()
        videos = synthetic_split(a.split, a.cache_dir, cfg, workers=2)
        families = synthetic_families(a.split, cfg)
        groups = {"all": list(range(len(videos)))}
        for i, v in enumerate(videos):
            groups.setdefault(families[v.video_id], []).append(i)
    else:
        if a.root is None:
            raise SystemExit(f"error: --root is required for --data {a.data}")
        _train, videos = real_split(a.data, a.root, a.cache_dir, a.fold, a.folds, 0)
        groups = {"all": list(range(len(videos)))}
    csv_rows: list[dict] = []
    tables = {m.name: grouped_tables(evaluate(m, videos, csv_rows), groups) for m in methods}
    for name, by_group in tables.items():
        print(f"\n{name}, all videos:\n{by_group['all'].to_markdown()}")
    print(side_by_side(tables))
    a.csv.parent.mkdir(parents=True, exist_ok=True)
    with a.csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(csv_rows)
    print(f"predictions: {a.csv}")
    if a.json:
        doc = {m: {g: t.to_dict() for g, t in by.items()} for m, by in tables.items()}
        a.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
