"""Metrics against hand-checked values; the arithmetic is in the comments."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fesnet.model.metrics import (
    SpotCounts,
    edit_score,
    evaluate_videos,
    frame_accuracy,
    interval_iou,
    intervals_to_labels,
    labels_to_intervals,
    match_intervals,
    spotting_f1,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, 1, 1, 0, 2, 2, 2, 1, 0], [(1, 2, 1), (4, 6, 2), (7, 7, 1)]),
        ([1, 0, 0, 2], [(0, 0, 1), (3, 3, 2)]),
        ([0, 0, 0], []),
        ([], []),
        ([2, 2], [(0, 1, 2)]),
    ],
)
def test_labels_to_intervals(labels: list[int], expected: list[tuple[int, int, int]]) -> None:
    assert labels_to_intervals(labels) == expected
    assert labels_to_intervals(np.array(labels, np.int64)) == expected
    assert list(intervals_to_labels(expected, len(labels))) == labels


def test_intervals_to_labels_overlap_and_errors() -> None:
    # The later interval wins where two overlap.
    assert list(intervals_to_labels([(0, 3, 2), (2, 2, 1)], 5)) == [2, 2, 1, 2, 0]
    for bad in [(3, 5, 1), (-1, 1, 1), (2, 1, 1), (0, 1, 0), (0, 1, 3)]:
        with pytest.raises(ValueError):
            intervals_to_labels([bad], 5)


# (pred, true, expected {label: (tp, fp, fn)})
MATCH_CASES = {
    # IoU 1.
    "exact": ([(10, 19, 1)], [(10, 19, 1)], {1: (1, 0, 0), 2: (0, 0, 0)}),
    # GT 0..9 (10 frames), pred 0..19 (20): inter 10, union 20 -> IoU 0.5 exactly: TP (>=).
    "iou_exactly_half": ([(0, 19, 2)], [(0, 9, 2)], {1: (0, 0, 0), 2: (1, 0, 0)}),
    # pred 0..20 (21): inter 10, union 21 -> 0.476 < 0.5: one FP and one FN.
    "iou_just_below": ([(0, 20, 2)], [(0, 9, 2)], {1: (0, 0, 0), 2: (0, 1, 1)}),
    # pred 0..18 (19): inter 10, union 19 -> 0.526: TP.
    "iou_just_above": ([(0, 18, 2)], [(0, 9, 2)], {1: (0, 0, 0), 2: (1, 0, 0)}),
    # Same frames, other class: the ME GT is missed (FN), the MaE prediction is an FP.
    "wrong_class": ([(10, 19, 2)], [(10, 19, 1)], {1: (0, 0, 1), 2: (0, 1, 0)}),
    # One GT 0..9, preds 0..9 (IoU 1) and 1..9 (IoU 9/10): the GT is matched once -> 1 TP, 1 FP.
    "one_gt_two_preds": ([(1, 9, 1), (0, 9, 1)], [(0, 9, 1)], {1: (1, 1, 0), 2: (0, 0, 0)}),
    # One pred 0..9 against GTs 0..9 and 0..8 (IoU 1 and 0.9): the pred is used once -> 1 FN.
    "two_gt_one_pred": ([(0, 9, 1)], [(0, 9, 1), (0, 8, 1)], {1: (1, 0, 1), 2: (0, 0, 0)}),
    "empty_preds": ([], [(0, 9, 1), (20, 29, 1), (40, 79, 2)], {1: (0, 0, 2), 2: (0, 0, 1)}),
    "empty_gt": ([(0, 9, 1)], [], {1: (0, 1, 0), 2: (0, 0, 0)}),
    "both_empty": ([], [], {1: (0, 0, 0), 2: (0, 0, 0)}),
    # No overlap at all (adjacent, inclusive ends: 0..9 and 10..19 share no frame).
    "adjacent": ([(10, 19, 1)], [(0, 9, 1)], {1: (0, 1, 1), 2: (0, 0, 0)}),
}


@pytest.mark.parametrize("case", sorted(MATCH_CASES))
def test_match_intervals(case: str) -> None:
    pred, true, expected = MATCH_CASES[case]
    got = match_intervals(pred, true)
    assert {k: (c.tp, c.fp, c.fn) for k, c in got.items()} == expected


def test_interval_iou_inclusive() -> None:
    assert interval_iou((0, 9, 1), (0, 19, 1)) == 0.5  # 10 / 20
    assert interval_iou((5, 5, 1), (5, 5, 2)) == 1.0  # one frame each, labels ignored
    assert interval_iou((0, 9, 1), (10, 19, 1)) == 0.0


def test_spot_counts_rates() -> None:
    c = SpotCounts(tp=3, fp=1, fn=2)
    assert c.precision == 0.75  # 3 / 4
    assert c.recall == 0.6  # 3 / 5
    assert c.f1 == pytest.approx(6 / 9)  # 2*3 / (6 + 1 + 2) == 2PR/(P+R) = 0.9/1.35
    assert SpotCounts().f1 == SpotCounts().precision == SpotCounts().recall == 0.0


def test_spotting_f1_sums_counts_before_rates() -> None:
    # Video A: ME tp1 fp1 fn0, MaE tp1 fp0 fn1. Video B: ME tp0 fp0 fn1, MaE tp2 fp1 fn0.
    a = {1: SpotCounts(1, 1, 0), 2: SpotCounts(1, 0, 1)}
    b = {1: SpotCounts(0, 0, 1), 2: SpotCounts(2, 1, 0)}
    got = spotting_f1([a, b])
    # ME sum: tp1 fp1 fn1 -> P = R = F1 = 0.5.
    assert got["ME"] == SpotCounts(1, 1, 1)
    assert got["ME"].f1 == 0.5
    # MaE sum: tp3 fp1 fn1 -> P = R = F1 = 0.75.
    assert got["MaE"] == SpotCounts(3, 1, 1)
    assert got["MaE"].f1 == 0.75
    # overall: tp4 fp2 fn2 -> F1 = 8 / 12.
    assert got["overall"] == SpotCounts(4, 2, 2)
    assert got["overall"].f1 == pytest.approx(2 / 3)
    # Not the mean of per-video ME F1s: A 2/3, B 0 -> 1/3 != 0.5.
    assert spotting_f1([])["overall"] == SpotCounts()


@pytest.mark.parametrize(
    ("pred", "true", "expected"),
    [
        ([0, 0, 1, 1, 0], [0, 0, 1, 1, 0], 100.0),
        # segments [0] vs [0, 1, 0]: two insertions, max len 3 -> (1 - 2/3) * 100.
        ([0, 0, 0, 0, 0], [0, 0, 1, 1, 0], 100 / 3),
        # Boundaries do not matter: both are [0, 1, 0].
        ([0, 1, 1, 0, 0], [0, 0, 1, 1, 0], 100.0),
        # [0, 2, 0] vs [0, 1, 0]: one substitution -> (1 - 1/3) * 100.
        ([0, 2, 2, 0], [0, 1, 1, 0], 200 / 3),
        # Over-segmentation [0, 1, 0, 1, 0] vs [0, 1, 0]: two deletions, max 5 -> 60.
        ([0, 1, 0, 1, 0], [0, 1, 1, 1, 0], 60.0),
        # Background counts as a segment: [1] vs [0]: one substitution, max 1 -> 0.
        ([1, 1, 1], [0, 0, 0], 0.0),
        ([], [], 100.0),
    ],
)
def test_edit_score(pred: list[int], true: list[int], expected: float) -> None:
    assert edit_score(pred, true) == pytest.approx(expected)
    assert edit_score(np.array(pred), np.array(true)) == pytest.approx(expected)


def test_frame_accuracy() -> None:
    assert frame_accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 75.0  # 3 of 4 frames
    with pytest.raises(ValueError):
        frame_accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        frame_accuracy([], [])


def test_evaluate_videos_table() -> None:
    videos = [
        # Video 1 (20 frames): perfect. ME tp1; Edit 100; 20 of 20 frames right.
        ([(5, 9, 1)], [(5, 9, 1)], 20),
        # Video 2 (20 frames): GT MaE 0..9. Pred MaE 0..4 (IoU 5/10 = 0.5 -> TP), ME 12..15 (FP).
        # Segments pred [2, 0, 1, 0] vs true [2, 0]: lev 2, max 4 -> Edit 50.
        # Frames right: 0-4 (5) + 10-11 (2) + 16-19 (4) = 11 of 20.
        ([(0, 4, 2), (12, 15, 1)], [(0, 9, 2)], 20),
    ]
    table = evaluate_videos(videos)
    # ME tp1 fp1 fn0 -> P 50, R 100, F1 2/3. MaE tp1 -> 100. Overall tp2 fp1 fn0 -> F1 4/5.
    assert table.counts["ME"] == SpotCounts(1, 1, 0)
    assert table.counts["MaE"] == SpotCounts(1, 0, 0)
    assert table.f1 == pytest.approx({"ME": 200 / 3, "MaE": 100.0, "overall": 80.0})
    assert table.f1_overall == pytest.approx(80.0)
    assert table.precision == pytest.approx({"ME": 50.0, "MaE": 100.0, "overall": 200 / 3})
    assert table.recall == pytest.approx({"ME": 100.0, "MaE": 100.0, "overall": 100.0})
    assert table.edit == pytest.approx(75.0)  # mean of 100 and 50
    assert table.acc == pytest.approx(77.5)  # (20 + 11) / 40 frames
    assert (table.n_videos, table.n_frames) == (2, 40)
    md = table.to_markdown()
    assert "| F1 (%) | 66.67 | 100.00 | 80.00 |" in md
    assert "| TP / FP / FN | 1 / 1 / 0 | 1 / 0 / 0 | 2 / 1 / 0 |" in md
    assert "| Edit (%) | | | 75.00 |" in md
    assert "| Acc (%) | | | 77.50 |" in md
    assert table.to_dict()["counts"]["overall"] == {"tp": 2, "fp": 1, "fn": 0}


def test_metrics_and_merger_stay_pure() -> None:
    """Both modules run in training, evaluation, the spotter and calibration: no torch, cv2,
    threads or clocks."""
    forbidden = {"torch", "cv2", "threading", "time", "asyncio", "logging", "mediapipe"}
    for name in ("metrics.py", "merger.py"):
        tree = ast.parse((ROOT / "model" / name).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
        assert not imported & forbidden, (name, imported & forbidden)
    code = (
        "import sys, fesnet.model.metrics, fesnet.model.merger; "
        "print(sorted(m for m in ('torch', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
