"""F1 against decision lag: the merger refitted on validation for each (stride, commit lag).

How early the merger can tell is a setting (docs/BENCHMARKS.md): a final event is decided
``commit_lag_frames`` slots after the gap rule closed its interval, at the next window, which
comes every ``stride`` slots. Scores near a window's right edge see MTAM's padding, so each
(stride, commit lag) gets its own thresholds: the validation videos are scored once at stride 1
(the windows of every larger stride are a subset), the merger is refitted on them per setting
(``fesnet.calibration.fit.fit_merger``, a reduced search space) and evaluated on the held-out
test videos, with the decision lag in slots of every final and onset event there.

    python scripts/latency_sweep.py --cache-dir .cache/aligned --out sweep.json [8:12 1:2 ...]

``--set v4 v3`` fits a merger on each set's validation videos, scoring a video the sets share
once (v3's are a subset of v4's); ``--apply`` and ``--quick`` take the first set's fit.
``--skip-test`` leaves the held-out split out (its columns are then null): judging a candidate
on validation alone does not need it aligned.

``--max-gap-s`` also bounds the gap rule (``gap_merge_s`` and ``mae_gap_merge_s``): a final
event waits for the gap as well, so a latency budget has to cap it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from fesnet.model.datasets import SYNTHETIC_SETS

DEFAULT = ("8:12", "8:4", "4:4", "2:4", "1:4", "4:2", "2:2", "1:2", "2:3", "1:3", "1:6", "2:8")


def at_stride(video, stride: int):
    """The windows a stride-``stride`` stream gets: every ``stride``-th start plus the tail."""
    keep = [i for i, s in enumerate(video.starts) if s % stride == 0 or i == len(video.starts) - 1]
    return replace(video, starts=[video.starts[i] for i in keep], probs=video.probs[keep])


def overall(videos, cfg) -> float:
    """Overall F1 (percent, 2 decimals) of one merger setting over scored videos."""
    from fesnet.calibration.fit import evaluate_config

    return round(evaluate_config(videos, cfg).f1["overall"], 2)


def decision_lags(videos, cfg) -> tuple[list[int], list[int]]:
    """Slots from offset to final event and from onset to onset event (flush decisions left
    out: they come at the end of a clip, not after a wait)."""
    from fesnet.model.merger import merge_offline

    final, onset = [], []
    for v in videos:
        events, _ = merge_offline(v.starts, v.probs, cfg)
        for e in events:
            if e.emitted_at_slot >= v.n_slots - 1:
                continue
            if e.state == "final":
                final.append(e.emitted_at_slot - e.offset_slot)
            elif e.state == "onset":
                onset.append(e.emitted_at_slot - e.onset_slot)
    return final, onset


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="*", default=list(DEFAULT), help="stride:commit_lag pairs")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/aligned"))
    p.add_argument("--base", type=Path, help="merger JSON to start from (default: the "
                   "checkpoint's)")
    p.add_argument("--max-gap-s", type=float, help="largest gap_merge_s / mae_gap_merge_s tried")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped checkpoint")
    p.add_argument("--set", dest="synthetic_sets", nargs="+", default=["v1"],
                   choices=SYNTHETIC_SETS, metavar="SET",
                   help="synthetic set(s) whose validation videos fit the merger, one fit each "
                   "(v1: the training people; v2: people no training video shows; v3: v2's and "
                   "videos of the same people with MEs as large as MaEs; v4: v3's and videos "
                   "delivered through H.264); the test split is shared")
    p.add_argument("--skip-test", action="store_true",
                   help="fit and report on validation only: the held-out split is not aligned, "
                   "scored or read (its columns are null)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for scoring")
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--apply",
        metavar="STRIDE:LAG",
        help="write that setting's fitted merger, its "
        "stride and its neutral reference into --checkpoint's JSON (as "
        "fesnet-calibrate fit --update-checkpoint does)",
    )
    p.add_argument(
        "--quick",
        metavar="STRIDE:LAG",
        help="write that setting's fitted merger and its stride into --checkpoint's JSON as its "
        "quick merger (the \"quick\" entry, what --latency quick loads)",
    )
    a = p.parse_args(argv)
    if len(set(a.synthetic_sets)) != len(a.synthetic_sets):
        p.error(f"--set names a set twice: {a.synthetic_sets}")
    for setting in (a.apply, a.quick):
        if setting and setting not in a.settings:
            a.settings.append(setting)
    from fesnet.calibration.fit import (
        SearchSpace,
        fit_merger,
        neutral_reference,
        score_videos,
    )
    from fesnet.model import checkpoint
    from fesnet.model.datasets import SyntheticSetConfig, synthetic_split
    from fesnet.model.merger import MergerConfig
    from fesnet.model.runtime import build_backend, load_checkpoint, merger_config

    ck = load_checkpoint(a.checkpoint)
    base = MergerConfig.from_json(a.base) if a.base else merger_config(ck)
    backend = build_backend("onnx", ck, a.threads)
    split_ids: dict[str, list[str]] = {}
    by_id: dict[str, object] = {}
    splits = [(name, "val") for name in a.synthetic_sets]
    if not a.skip_test:
        splits.append((a.synthetic_sets[0], "test"))
    for name, split in splits:
        videos = synthetic_split(split, a.cache_dir, SyntheticSetConfig.preset(name))
        split_ids[f"{name}/{split}"] = [v.video_id for v in videos]
        todo = [v for v in videos if v.video_id not in by_id]
        by_id.update({sv.video_id: sv for sv in score_videos(
            backend, todo, ck.config.window_frames, 1)})
        del videos, todo
    test_scored = (None if a.skip_test
                   else [by_id[i] for i in split_ids[f"{a.synthetic_sets[0]}/test"]])
    gaps = tuple(g for g in (0.0, 0.05, 0.1) if a.max_gap_s is None or g <= a.max_gap_s)
    space = SearchSpace(
        on_threshold=tuple(round(x, 2) for x in np.arange(0.5, 0.951, 0.05)),
        off_ratio=(0.7, 0.85, 1.0), min_expression_frames=(3, 6, 9), gap_merge_s=gaps,
        duration_rule=((0.5, 0.5),), max_expression_s=(5.0,), fusion=("mean", "max", "latest"),
    )
    if a.max_gap_s is not None:
        base = replace(base, gap_merge_s=min(base.gap_merge_s, a.max_gap_s),
                       mae_gap_merge_s=min(base.mae_gap_merge_s, a.max_gap_s))
    rows = []
    for setting, name in ((x, n) for x in a.settings for n in a.synthetic_sets):
        stride, lag = (int(x) for x in setting.split(":"))
        val = [at_stride(by_id[i], stride) for i in split_ids[f"{name}/val"]]
        test = None if test_scored is None else [at_stride(v, stride) for v in test_scored]
        start = replace(base, commit_lag_frames=lag, right_margin_frames=min(4, lag))
        fit = fit_merger(val, start, space, "overall", max_rounds=2)
        final, onset = decision_lags(test, fit.best) if test is not None else ([], [])
        row = {
            "set": name,
            "stride": stride,
            "commit_lag": lag,
            "max_gap_s": a.max_gap_s,
            "val_f1_unfitted": round(fit.base_table.f1["overall"], 2),
            "val_f1": round(fit.table.f1["overall"], 2),
            "test_f1_unfitted": None if test is None else overall(test, start),
            "test_f1": None if test is None else overall(test, fit.best),
            "final_lag_slots_p50": float(np.median(final)) if final else None,
            "final_lag_slots_p99": float(np.percentile(final, 99)) if final else None,
            "onset_lag_slots_p50": float(np.median(onset)) if onset else None,
            "finals": len(final),
            "merger": fit.best.to_dict(),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "merger"}), flush=True)
        if name != a.synthetic_sets[0]:
            continue
        if setting == a.apply:
            by = (f"scripts/latency_sweep.py --apply {setting} --max-gap-s {a.max_gap_s} "
                  f"--set {name}")
            checkpoint.update_meta(
                ck.path, merger=fit.best.to_dict(), stride_frames=stride,
                neutral_reference=neutral_reference(val, fit.best),
                merger_fit={"by": by, "val_overall_f1_base": row["val_f1_unfitted"],
                            "val_overall_f1_fitted": row["val_f1"]},
            )
            print(f"{checkpoint.sidecar(ck.path)} updated: merger, stride {stride}", flush=True)
        if setting == a.quick:
            by = (f"scripts/latency_sweep.py --quick {setting} --max-gap-s {a.max_gap_s} "
                  f"--set {name}")
            checkpoint.update_meta(ck.path, quick={
                "merger": fit.best.to_dict(), "stride_frames": stride,
                "merger_fit": {"by": by, "val_overall_f1_fitted": row["val_f1"],
                               "test_overall_f1": row["test_f1"],
                               "final_lag_slots_p50": row["final_lag_slots_p50"]},
            })
            print(f"{checkpoint.sidecar(ck.path)} updated: quick merger, stride {stride}",
                  flush=True)
    if a.out:
        a.out.write_text(json.dumps({"base": base.to_dict(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
