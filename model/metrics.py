"""Spotting metrics as small pure functions (paper section 4.2): interval F1 at IoU >= 0.5 per
class and overall (MEGC protocol), MS-TCN's segmental Edit score and frame-wise accuracy.

Conventions: class ids 0 neutral, 1 ME, 2 MaE; intervals are ``(onset, offset, label)`` with
inclusive frame indices; label sequences are 1-D integer arrays, one label per frame.
Pure Python + numpy, so training, evaluation, the spotter and calibration can all use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Interval = tuple[int, int, int]
CLASSES: dict[str, int] = {"ME": 1, "MaE": 2}
IOU_THRESHOLD = 0.5


def labels_to_intervals(labels: Sequence[int] | np.ndarray) -> list[Interval]:
    """Runs of equal non-zero labels as ``(onset, offset, label)``, inclusive, in order.

    A run that changes label without passing through 0 (1 1 2 2) gives two intervals.
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return []
    change = np.flatnonzero(arr[1:] != arr[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change - 1, [arr.size - 1]])
    return [(int(s), int(e), int(arr[s])) for s, e in zip(starts, ends, strict=True) if arr[s] != 0]


def intervals_to_labels(intervals: Iterable[Interval], n_frames: int) -> np.ndarray:
    """Per-frame labels (int64, length ``n_frames``, 0 where no interval is).

    Intervals are written in the given order, so where two overlap the later one wins.
    An interval outside ``[0, n_frames)`` or with onset > offset is a ``ValueError``: silently
    clipping would hide an off-by-one in whatever produced it.
    """
    labels = np.zeros(n_frames, np.int64)
    for onset, offset, label in intervals:
        if not 0 <= onset <= offset < n_frames:
            raise ValueError(
                f"interval ({onset}, {offset}, {label}) does not fit in {n_frames} frames"
            )
        if label not in (1, 2):
            raise ValueError(f"interval label must be 1 (ME) or 2 (MaE), got {label}")
        labels[onset : offset + 1] = label
    return labels


def interval_iou(a: Interval, b: Interval) -> float:
    """IoU of two inclusive frame intervals (labels ignored)."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
    return inter / union


@dataclass(frozen=True)
class SpotCounts:
    """TP / FP / FN of interval spotting; sums with ``+``. Rates are fractions in [0, 1] and
    0.0 when their denominator is 0 (e.g. F1 of a class with neither predictions nor GT)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: SpotCounts) -> SpotCounts:
        return SpotCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN), the same as 2PR / (P + R) (the paper's Eq. 8)."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 0.0


def match_intervals(
    pred: Iterable[Interval],
    true: Iterable[Interval],
    iou_threshold: float = IOU_THRESHOLD,
) -> dict[int, SpotCounts]:
    """Per-class counts for one video, ``{1: ME counts, 2: MaE counts}``.

    A prediction is a TP when its IoU with a ground-truth interval of the same class is
    >= ``iou_threshold``. Pairs are matched greedily, highest IoU first (ties: earlier
    prediction, then earlier GT), each GT and each prediction at most once; unmatched
    predictions are FP, unmatched GT are FN.
    """
    pred, true = list(pred), list(true)
    out: dict[int, SpotCounts] = {}
    for label in CLASSES.values():
        p = [iv for iv in pred if iv[2] == label]
        t = [iv for iv in true if iv[2] == label]
        pairs = [
            (-iou, i, j)
            for i, a in enumerate(p)
            for j, b in enumerate(t)
            if (iou := interval_iou(a, b)) >= iou_threshold
        ]
        used_p: set[int] = set()
        used_t: set[int] = set()
        for _, i, j in sorted(pairs):
            if i not in used_p and j not in used_t:
                used_p.add(i)
                used_t.add(j)
        tp = len(used_p)
        out[label] = SpotCounts(tp, len(p) - tp, len(t) - tp)
    return out


def spotting_f1(per_video: Iterable[Mapping[int, SpotCounts]]) -> dict[str, SpotCounts]:
    """Counts summed over videos: ``{"ME": ..., "MaE": ..., "overall": ...}``.

    MEGC protocol: TP, FP and FN are summed over all videos first and precision / recall / F1
    (the ``SpotCounts`` properties) are computed from the sums, not averaged per video;
    "overall" is computed from the summed counts of both classes.
    """
    total = {name: SpotCounts() for name in CLASSES}
    for counts in per_video:
        for name, label in CLASSES.items():
            total[name] = total[name] + counts.get(label, SpotCounts())
    total["overall"] = total["ME"] + total["MaE"]
    return total


def _segments(labels: Sequence[int] | np.ndarray) -> list[int]:
    arr = np.asarray(labels)
    if arr.size == 0:
        return []
    keep = np.concatenate([[True], arr[1:] != arr[:-1]])
    return [int(x) for x in arr[keep]]


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Edit distance (insert, delete, substitute, each cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_score(
    pred_labels: Sequence[int] | np.ndarray, true_labels: Sequence[int] | np.ndarray
) -> float:
    """MS-TCN's segmental Edit score in percent: ``(1 - lev / max(len_p, len_t)) * 100`` over the
    sequences of segment labels (consecutive equal frame labels collapsed into one segment).

    Neutral segments are included: MS-TCN's eval.py drops only a class literally named
    "background", and our neutral class is not. So 0 0 1 1 0 has segments [0, 1, 0].
    Two empty sequences score 100.
    """
    p, t = _segments(pred_labels), _segments(true_labels)
    n = max(len(p), len(t))
    if n == 0:
        return 100.0
    return (1.0 - levenshtein(p, t) / n) * 100.0


def frame_accuracy(
    pred_labels: Sequence[int] | np.ndarray, true_labels: Sequence[int] | np.ndarray
) -> float:
    """Percentage of frames whose predicted label equals the true one.

    The paper's Eq. 6 is garbled in the available text (it reads like an IoU); the paper says
    Acc is computed "similarly as" MS-TCN, so this is MS-TCN's frame-wise accuracy.
    """
    p, t = np.asarray(pred_labels), np.asarray(true_labels)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"need two 1-D label sequences of equal length, got {p.shape}, {t.shape}")
    if p.size == 0:
        raise ValueError("frame accuracy of an empty sequence is undefined")
    return float(np.mean(p == t) * 100.0)


@dataclass(frozen=True)
class MetricTable:
    """Scores over a set of videos, all in percent as in the paper's tables.

    ``f1`` / ``precision`` / ``recall`` / ``counts`` are keyed "ME", "MaE", "overall" (MEGC:
    from counts summed over videos). ``edit`` is the mean of per-video Edit scores and ``acc``
    the frame accuracy pooled over all frames of all videos, as MS-TCN's eval.py computes them.
    """

    f1: dict[str, float]
    precision: dict[str, float]
    recall: dict[str, float]
    counts: dict[str, SpotCounts]
    edit: float
    acc: float
    n_videos: int
    n_frames: int

    @property
    def f1_overall(self) -> float:
        """The single number model selection ranks by (overall F1, percent)."""
        return self.f1["overall"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "f1": dict(self.f1),
            "precision": dict(self.precision),
            "recall": dict(self.recall),
            "counts": {k: asdict(c) for k, c in self.counts.items()},
            "edit": self.edit,
            "acc": self.acc,
            "n_videos": self.n_videos,
            "n_frames": self.n_frames,
        }

    def to_markdown(self) -> str:
        """A README-ready table (values in percent, two decimals like the paper)."""
        cols = ("ME", "MaE", "overall")
        rows = [
            "| metric | ME | MaE | overall |",
            "|---|---:|---:|---:|",
            *(
                f"| {name} (%) | " + " | ".join(f"{values[c]:.2f}" for c in cols) + " |"
                for name, values in (
                    ("F1", self.f1),
                    ("precision", self.precision),
                    ("recall", self.recall),
                )
            ),
            "| TP / FP / FN | "
            + " | ".join(
                f"{self.counts[c].tp} / {self.counts[c].fp} / {self.counts[c].fn}" for c in cols
            )
            + " |",
            f"| Edit (%) | | | {self.edit:.2f} |",
            f"| Acc (%) | | | {self.acc:.2f} |",
        ]
        return "\n".join(rows) + "\n"


def evaluate_videos(
    videos: Iterable[tuple[Sequence[Interval], Sequence[Interval], int]],
    iou_threshold: float = IOU_THRESHOLD,
) -> MetricTable:
    """``(pred_intervals, true_intervals, n_frames)`` per video -> ``MetricTable``."""
    per_video: list[dict[int, SpotCounts]] = []
    edits: list[float] = []
    correct = total = 0
    for pred, true, n_frames in videos:
        per_video.append(match_intervals(pred, true, iou_threshold))
        p = intervals_to_labels(pred, n_frames)
        t = intervals_to_labels(true, n_frames)
        edits.append(edit_score(p, t))
        correct += int(np.sum(p == t))
        total += n_frames
    counts = spotting_f1(per_video)
    return MetricTable(
        f1={k: c.f1 * 100.0 for k, c in counts.items()},
        precision={k: c.precision * 100.0 for k, c in counts.items()},
        recall={k: c.recall * 100.0 for k, c in counts.items()},
        counts=counts,
        edit=float(np.mean(edits)) if edits else 0.0,
        acc=correct / total * 100.0 if total else 0.0,
        n_videos=len(per_video),
        n_frames=total,
    )
