"""Fit the merger's settings to labelled clips.

Window scores do not depend on any merger setting, so every clip is scored ONCE
(``predict_windows``: encoder once per frame, window head on every ``stride`` window) and the
search only replays the stored windows through ``merge_offline``, the same merger code the
streaming spotter runs. A fitted config therefore reproduces its F1 when the spotter loads it on
the same clips (tests/test_calibration_fit.py drives the real Spotter to check it).

The search is coordinate ascent over a grid (:class:`SearchSpace`): the (on, off) threshold pair
jointly, then minimum length, gap merging, the ME/MaE duration boundary, the forced-close length
and the fusion rule, repeated until nothing improves. Every evaluated config is kept as a
:class:`Trial`, which is what the ME-vs-MaE trade-off plot shows. ``commit_lag_frames`` and
``right_margin_frames`` are latency settings and are not searched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fesnet.model.backends import Backend
from fesnet.model.inference import predict_windows, video_geometry
from fesnet.model.merger import ConfigError, MergerConfig, events_to_intervals, merge_offline
from fesnet.model.metrics import Interval, MetricTable, evaluate_videos, labels_to_intervals

logger = logging.getLogger(__name__)

METRICS = ("overall", "ME", "MaE", "edit", "acc")


@dataclass
class ScoredVideo:
    """One clip's window probabilities and its truth, on the 60 Hz slot timeline."""

    video_id: str
    starts: list[int]
    probs: np.ndarray  # (W, T, 3) float32
    n_slots: int
    intervals: list[Interval]
    subject: str = ""


def score_videos(
    backend: Backend,
    videos: Sequence[Any],
    window_frames: int,
    stride_frames: int,
) -> list[ScoredVideo]:
    """Score every window of every aligned video once (``AlignedVideo``-like: ``video_id``,
    ``crops``, ``labels``, optional ``subject``)."""
    from tqdm import tqdm

    out = []
    for v in tqdm(videos, desc="scoring", unit="clip", disable=len(videos) < 3):
        starts, probs = predict_windows(backend, v.crops, window_frames, stride_frames,
                                        video_geometry(backend, v))
        out.append(
            ScoredVideo(
                video_id=v.video_id,
                starts=starts,
                probs=probs,
                n_slots=len(v.crops),
                intervals=labels_to_intervals(np.asarray(v.labels)),
                subject=str(getattr(v, "subject", "")),
            )
        )
    return out


def predict_intervals(video: ScoredVideo, cfg: MergerConfig) -> list[Interval]:
    if not video.starts:
        return []
    events, _ = merge_offline(video.starts, video.probs, cfg)
    return events_to_intervals(events)


def evaluate_config(scored: Sequence[ScoredVideo], cfg: MergerConfig) -> MetricTable:
    """MEGC metrics of ``cfg`` over the stored windows (counts summed over clips)."""
    return evaluate_videos(
        (predict_intervals(v, cfg), v.intervals, v.n_slots) for v in scored
    )


def metric_value(table: MetricTable, metric: str) -> float:
    if metric in ("overall", "ME", "MaE"):
        return table.f1[metric]
    if metric == "edit":
        return table.edit
    if metric == "acc":
        return table.acc
    raise ValueError(f"unknown metric {metric!r}: one of {METRICS}")


@dataclass(frozen=True)
class SearchSpace:
    """Candidate values per merger setting (thresholds as (on, off/on ratio) pairs)."""

    on_threshold: tuple[float, ...] = tuple(round(x, 2) for x in np.arange(0.30, 0.951, 0.05))
    off_ratio: tuple[float, ...] = (0.5, 0.7, 0.85, 1.0)
    min_expression_frames: tuple[int, ...] = (3, 6, 9, 12, 18)
    gap_merge_s: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
    duration_rule: tuple[tuple[float, float], ...] = (
        (0.5, 0.5), (0.4, 0.4), (0.45, 0.45), (0.55, 0.55), (0.6, 0.6), (0.4, 0.6),
    )
    """(mae_min_s, me_max_s) pairs: where ME ends and MaE begins, by duration."""
    max_expression_s: tuple[float, ...] = (3.0, 5.0, 8.0)
    fusion: tuple[str, ...] = ("mean", "max", "latest")

    @classmethod
    def small(cls) -> SearchSpace:
        """A coarse space for tests and quick runs."""
        return cls(
            on_threshold=(0.4, 0.5, 0.6, 0.7),
            off_ratio=(0.7, 1.0),
            min_expression_frames=(3, 6),
            gap_merge_s=(0.0, 0.1),
            duration_rule=((0.5, 0.5), (0.4, 0.6)),
            max_expression_s=(5.0,),
            fusion=("mean", "max"),
        )

    def coordinates(self, cfg: MergerConfig) -> list[tuple[str, list[MergerConfig]]]:
        """For each coordinate, the candidate configs that change only it (invalid ones skipped)."""

        def build(**kw: Any) -> MergerConfig | None:
            try:
                return replace(cfg, **kw)
            except ConfigError:
                return None

        coords: list[tuple[str, list[MergerConfig | None]]] = [
            ("thresholds", [
                build(on_threshold=float(on), off_threshold=float(round(on * r, 4)))
                for on in self.on_threshold for r in self.off_ratio
            ]),
            ("min_expression_frames",
             [build(min_expression_frames=int(n)) for n in self.min_expression_frames]),
            ("gap_merge_s", [build(gap_merge_s=float(g)) for g in self.gap_merge_s]),
            ("duration_rule",
             [build(mae_min_s=float(a), me_max_s=float(b)) for a, b in self.duration_rule]),
            ("max_expression_s",
             [build(max_expression_s=float(m)) for m in self.max_expression_s]),
            ("fusion", [build(fusion=f) for f in self.fusion]),
        ]
        return [(name, [c for c in cands if c is not None]) for name, cands in coords]


@dataclass(frozen=True)
class Trial:
    """One evaluated config (only the searched settings) and its scores (percent)."""

    settings: dict[str, Any]
    f1_me: float
    f1_mae: float
    f1_overall: float
    edit: float
    acc: float
    score: float


_SEARCHED = ("on_threshold", "off_threshold", "min_expression_frames", "gap_merge_s",
             "mae_min_s", "me_max_s", "max_expression_s", "fusion")


@dataclass
class FitResult:
    best: MergerConfig
    table: MetricTable
    base_table: MetricTable
    metric: str
    trials: list[Trial] = field(default_factory=list)
    n_videos: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "n_videos": self.n_videos,
            "best": self.best.to_dict(),
            "best_scores": self.table.to_dict(),
            "base_scores": self.base_table.to_dict(),
            "trials": [asdict(t) for t in self.trials],
        }


def fit_merger(
    scored: Sequence[ScoredVideo],
    base: MergerConfig,
    space: SearchSpace | None = None,
    metric: str = "overall",
    max_rounds: int = 4,
) -> FitResult:
    """Coordinate ascent from ``base`` maximising ``metric`` over the stored windows.

    Ties keep the current value (the search never moves for nothing), so the result is at least
    as good as ``base`` on these clips.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: one of {METRICS}")
    space = space or SearchSpace()
    cache: dict[tuple, tuple[MetricTable, float]] = {}
    trials: list[Trial] = []

    def run(cfg: MergerConfig) -> tuple[MetricTable, float]:
        key = tuple(sorted(cfg.to_dict().items()))
        if key not in cache:
            table = evaluate_config(scored, cfg)
            value = metric_value(table, metric)
            cache[key] = (table, value)
            trials.append(
                Trial(
                    settings={k: getattr(cfg, k) for k in _SEARCHED},
                    f1_me=table.f1["ME"],
                    f1_mae=table.f1["MaE"],
                    f1_overall=table.f1["overall"],
                    edit=table.edit,
                    acc=table.acc,
                    score=value,
                )
            )
        return cache[key]

    base_table, best_value = run(base)
    best = base
    for round_ in range(max_rounds):
        improved = False
        for name, candidates in space.coordinates(best):
            for cand in candidates:
                _, value = run(cand)
                if value > best_value + 1e-9:
                    best, best_value, improved = cand, value, True
            logger.debug("round %d %s: %s = %.2f", round_, name, metric, best_value)
        if not improved:
            break
    return FitResult(best, run(best)[0], base_table, metric, trials, len(scored))


REFERENCE_QUANTILES = (0.5, 0.9, 0.99)


def calm_p_expr(v: ScoredVideo, cfg: MergerConfig) -> tuple[np.ndarray, np.ndarray]:
    """(committed fused p_expr per slot, calm mask) of one scored clip (``v.starts`` not empty):
    calm slots are scored and have no labelled expression within a window's length either side."""
    t = cfg.window_frames
    _, fused = merge_offline(v.starts, v.probs, cfg)
    p_expr = fused[:, 1] + fused[:, 2]
    calm = np.zeros(len(p_expr), bool)
    calm[v.starts[0] : v.starts[-1] + t] = True
    for on, off, _ in v.intervals:
        calm[max(0, on - t) : off + t + 1] = False
    return p_expr, calm


def neutral_reference(
    scored: Sequence[ScoredVideo], cfg: MergerConfig, duration_s: float = 3.0
) -> dict[str, Any] | None:
    """The resting level ``cfg``'s thresholds were fitted against, measured like a calibration
    phase measures one person: the committed fused p_expr of calm stretches of the fit clips (no
    labelled expression within a window's length either side), cut into ``duration_s`` pieces;
    per quantile of :data:`REFERENCE_QUANTILES`, each piece's quantile, then the median over
    pieces. None if no clip has such a stretch. The relative calibration rule (profile.py)
    compares a person's rest with this."""
    need = max(1, round(duration_s * cfg.fps))
    levels: list[np.ndarray] = []
    for v in scored:
        if not v.starts:
            continue
        p_expr, calm = calm_p_expr(v, cfg)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], calm.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            for start in range(a, b - need + 1, need):
                levels.append(np.quantile(p_expr[start : start + need], REFERENCE_QUANTILES))
    if not levels:
        return None
    med = np.median(np.stack(levels), axis=0)
    return {
        "p_expr": {str(q): float(x) for q, x in zip(REFERENCE_QUANTILES, med, strict=True)},
        "pieces": len(levels),
        "piece_s": duration_s,
    }


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the points (N, 2) no other point beats in both coordinates, by x."""
    order = np.lexsort((-points[:, 1], -points[:, 0]))
    front, best_y = [], -np.inf
    for i in order:
        if points[i, 1] > best_y:
            front.append(i)
            best_y = points[i, 1]
    return np.array(sorted(front, key=lambda i: points[i, 0]), dtype=int)


def tradeoff_png(result: FitResult, path: str | Path, title: str = "") -> Path:
    """ME F1 vs MaE F1 of every evaluated config, the Pareto front, base and best marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = np.array([[t.f1_me, t.f1_mae] for t in result.trials], np.float64).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    ax.scatter(pts[:, 0], pts[:, 1], s=10, alpha=0.35, color="tab:gray", label="evaluated configs")
    if len(pts):
        front = pareto_front(pts)
        ax.plot(pts[front, 0], pts[front, 1], "-o", ms=4, color="tab:green", label="Pareto front")
    b, t = result.base_table, result.table
    ax.scatter([b.f1["ME"]], [b.f1["MaE"]], marker="s", s=60, color="tab:blue",
               label=f"base (overall {b.f1['overall']:.1f})", zorder=3)
    ax.scatter([t.f1["ME"]], [t.f1["MaE"]], marker="*", s=160, color="tab:red",
               label=f"fitted (overall {t.f1['overall']:.1f})", zorder=4)
    top = max(10.0, float(pts.max()) + 5.0 if len(pts) else 10.0)
    ax.set_xlim(-1.0, min(top, 101.0))
    ax.set_ylim(-1.0, min(top, 101.0))
    ax.set_xlabel("ME F1 (%)")
    ax.set_ylabel("MaE F1 (%)")
    ax.set_title(title or f"merger fit on {result.n_videos} clips (metric: {result.metric})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
