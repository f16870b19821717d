"""The spotting methods every evaluation runs: one registry, one loader, one loop.

The registry is ``runtime.METHODS`` (the names ``RuntimeConfig.method`` loads): ``fesnet-eval``
on the synthetic split, on a dataset, on the independent suite and on the real clips all run
every registered method, so a method added there shows up in each of them without further
edits. Every method spots a video the same way: its backend's geometry vectors for the video
(``inference.video_geometry``), then ``inference.spot_video`` with the method's own merger
settings and stride, as the streaming spotter runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tqdm import tqdm

from .backends import Backend
from .fesnet import CLASS_NAMES, MODEL_FPS
from .inference import VideoPrediction, spot_video, video_geometry
from .merger import MergerConfig
from .metrics import labels_to_intervals
from .runtime import METHODS, RuntimeConfig, load_runtime


@dataclass
class Method:
    """One spotter to evaluate: a backend (which says whether it reads the geometry channel)
    and its merger settings."""

    name: str
    backend: Backend
    merger: MergerConfig
    stride_frames: int


def method_config(base: RuntimeConfig, name: str) -> RuntimeConfig:
    """``base`` for method ``name``. A merger JSON given on the command line belongs to the
    network; every other method keeps the merger settings its loader chooses."""
    return replace(base, method=name,
                   merger_config=base.merger_config if name == "fesnet" else None)


def load_methods(base: RuntimeConfig, names: tuple[str, ...] = METHODS) -> list[Method]:
    """Every method of ``names`` (default: all registered), loaded by the shared runtime rules.
    Raises ``runtime.LoadError``."""
    out = []
    for name in names:
        rt = load_runtime(method_config(base, name))
        out.append(Method(name, rt.backend, rt.merger, rt.stride_frames))
    return out


def spot(method: Method, video: Any) -> VideoPrediction:
    """One aligned video (``AlignedVideo``-like: crops, landmarks, video_id) through a method."""
    geom = video_geometry(method.backend, video)
    return spot_video(method.backend, video.crops, method.merger, method.stride_frames, geom)


def evaluate(
    method: Method, videos: list, csv_rows: list[dict] | None = None
) -> list[tuple[list, list, int]]:
    """Spot every video; returns one (predicted, true intervals, n slots) row per video (for
    ``metrics.evaluate_videos``) and appends the final events to ``csv_rows``."""
    rows = []
    for v in tqdm(videos, desc=method.name, unit="video", disable=len(videos) < 2):
        pred = spot(method, v)
        rows.append((pred.intervals, labels_to_intervals(v.labels), len(v.labels)))
        if csv_rows is None:
            continue
        for ev in pred.events:
            if ev.state in ("final", "interrupted"):
                csv_rows.append({
                    "method": method.name,
                    "vid": v.video_id,
                    "pred_onset": int(v.source_index[ev.onset_slot]),
                    "pred_offset": int(v.source_index[ev.offset_slot]),
                    "type": CLASS_NAMES[ev.label],
                    "score": round(float(ev.score), 4),
                    "onset_s": round(ev.onset_slot / MODEL_FPS, 3),
                    "offset_s": round(ev.offset_slot / MODEL_FPS, 3),
                })
    return rows
