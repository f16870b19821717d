"""Does per-person calibration help? Synthetic sessions whose neutral face differs.

Each session is one identity with a *neutral look* drawn once (``synthetic.random_look``: a
constant resting AU offset / asymmetry, face shape, room lighting and side light; see
``SyntheticSpec``) and two clips that share it: a short neutral clip (the calibration phase: no
expressions, blinks and head motion as usual) and a labelled test clip. For every session the
test clip is spotted with the base thresholds and with the thresholds each
:class:`ThresholdRule` derives from the session's own neutral clip; F1 is pooled over sessions
(MEGC: counts summed).

Window scores are computed once per clip; the neutral clip is fused exactly as the live phase
fuses it (``profile_from_windows``), so the offline numbers are what a live session would get.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fesnet.model.backends import Backend
from fesnet.model.inference import predict_windows, video_geometry
from fesnet.model.merger import MergerConfig
from fesnet.model.metrics import MetricTable, evaluate_videos

from .baseline import profile_from_windows
from .fit import ScoredVideo, predict_intervals, score_videos
from .profile import ThresholdRule

if TYPE_CHECKING:
    from fesnet.model.data.synthetic import SyntheticSpec

logger = logging.getLogger(__name__)

DEFAULT_RULES: dict[str, ThresholdRule] = {
    "q99+0.05": ThresholdRule(0.99, 0.05),
    "q95+0.05": ThresholdRule(0.95, 0.05),
    "max+0.02": ThresholdRule(1.0, 0.02),
    "q99+0.05 (may lower)": ThresholdRule(0.99, 0.05, allow_lower=True),
}


@dataclass
class Session:
    identity: str
    look: dict[str, Any]
    neutral: Any  # AlignedVideo of the calibration clip
    test: Any  # AlignedVideo of the labelled clip


def neutral_clip_spec(session: SyntheticSpec, neutral_s: float) -> SyntheticSpec:
    """The calibration clip of a session: its look, no expressions, and head moves and light
    changes at the session's rate (``n_head_moves`` / ``n_light_changes`` are counts per video: a
    3 s clip with the defaults got 2 sudden head moves and a light change, 10x the rate of the
    30 s labelled clip, and its resting median sat above the fitted reference in every session).
    Blinks, drift, jitter and noise are rates or amplitudes and carry over unchanged."""
    from dataclasses import replace

    duration = max(neutral_s, 1.0)  # min_gap_s bounds it only from below (no events are placed)
    scale = duration / session.duration_s
    return replace(
        session,
        duration_s=duration,
        n_me=0,
        n_mae=0,
        n_head_moves=round(session.n_head_moves * scale),
        n_light_changes=round(session.n_light_changes * scale),
    )


def make_sessions(
    identities: Sequence[str],
    sessions_per_identity: int,
    cache_dir: Path,
    duration_s: float = 30.0,
    neutral_s: float = 3.0,
    seed: int = 0,
) -> list[Session]:
    """Render (or read from the cache) and align every session's two clips."""
    from fesnet.model.data.align import FaceAligner
    from fesnet.model.data.preprocess import preprocess_synthetic
    from fesnet.model.data.synthetic import SyntheticSpec, random_look

    rng = np.random.default_rng([seed, 7])
    sessions = []
    with FaceAligner() as aligner:
        for i, identity in enumerate(identities):
            for k in range(sessions_per_identity):
                look = random_look(rng)
                clip_seed = 50_000 + seed * 1000 + i * 10 + k
                test_spec = SyntheticSpec(duration_s=duration_s, **look)
                neutral_spec = neutral_clip_spec(test_spec, neutral_s)
                test = preprocess_synthetic(identity, test_spec, clip_seed, aligner=aligner,
                                            cache_dir=cache_dir)
                neutral = preprocess_synthetic(identity, neutral_spec, clip_seed + 5,
                                               aligner=aligner, cache_dir=cache_dir)
                sessions.append(Session(identity, look, neutral, test))
    return sessions


@dataclass
class NeutralResult:
    tables: dict[str, MetricTable]  # "none" (base thresholds) and one per rule
    per_session: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": {k: t.to_dict() for k, t in self.tables.items()},
            "per_session": self.per_session,
        }

    def to_markdown(self) -> str:
        rows = [
            "| thresholds | ME F1 | MaE F1 | overall F1 | TP / FP / FN (overall) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, t in self.tables.items():
            c = t.counts["overall"]
            rows.append(
                f"| {name} | {t.f1['ME']:.2f} | {t.f1['MaE']:.2f} | {t.f1['overall']:.2f} | "
                f"{c.tp} / {c.fp} / {c.fn} |"
            )
        return "\n".join(rows) + "\n"


def run_neutral_experiment(
    backend: Backend,
    sessions: Sequence[Session],
    base: MergerConfig,
    rules: dict[str, ThresholdRule] | None = None,
    *,
    stride_frames: int,
) -> NeutralResult:
    """Spot every session's test clip uncalibrated and calibrated by each rule."""
    rules = rules or DEFAULT_RULES
    t = base.window_frames
    scored: list[ScoredVideo] = score_videos(backend, [s.test for s in sessions], t, stride_frames)
    preds: dict[str, list[tuple]] = {"none": []}
    preds.update({name: [] for name in rules})
    per_session = []
    for session, video in zip(sessions, scored, strict=True):
        starts, probs = predict_windows(backend, session.neutral.crops, t, stride_frames,
                                        video_geometry(backend, session.neutral))
        row: dict[str, Any] = {"identity": session.identity, "look": session.look}
        uncalibrated = (predict_intervals(video, base), video.intervals, video.n_slots)
        preds["none"].append(uncalibrated)
        row["none"] = {"f1_overall": evaluate_videos([uncalibrated]).f1_overall}
        for name, rule in rules.items():
            profile = profile_from_windows([list(zip(starts, probs, strict=True))], base,
                                           "experiment", rule)
            cfg = profile.apply(base)
            spotted = (predict_intervals(video, cfg), video.intervals, video.n_slots)
            preds[name].append(spotted)
            row[name] = {
                "on_threshold": cfg.on_threshold,
                "off_threshold": cfg.off_threshold,
                "f1_overall": evaluate_videos([spotted]).f1_overall,
            }
        row["rest_p_expr_q99"] = profile.stats.quantile(0.99)
        row["rest_p_expr_median"] = profile.stats.quantile(0.5)
        per_session.append(row)
    tables = {name: evaluate_videos(rows) for name, rows in preds.items()}
    return NeutralResult(tables, per_session)
