"""Score every method on the independent suite and on real unlabelled clips, through the
product's own path (``fesnet-eval --suite independent|real|both``; docs/SUITE.md).

Each clip is read as a video file by the product's preprocessing (``preprocess_record`` with
the real ``FaceAligner``, resampled to the 60 Hz model timeline, cached like every other aligned
video), then every method spots it with ``methods.spot``: ``inference.spot_video`` and the
method's merger, as ``fesnet-eval`` and the streaming spotter run it. The clips come from
``fesnet.model.suite``, whose renderer shares no code with the training data path; this module
imports the product (preprocessing, geometry channel, models) and nothing of the generator.

- ``independent``: interval F1 at IoU >= 0.5 per class and overall, TP / FP / FN, ME predicted /
  right / true, per video and per group (``suite_groups``: all, stratum subtle / clear, talking /
  calm and their crossings, 30 / 60 FPS, 480p / 720p); labels are in source frames and scored on
  the slot timeline, as everywhere in ``fesnet-eval``.
- ``real``: final events per minute of *tracked* face per method, per clip and in total, the
  clips that show a generator still's person apart from the others. A face that is lost splits
  the clip into segments, each spotted on its own (the streaming spotter ends a segment where
  the face is lost); time without a face counts for nothing.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from .data.common import VideoRecord, labels_from_intervals
from .data.preprocess import (
    MODEL_FPS,
    AlignedVideo,
    PreprocessError,
    PreprocessSettings,
    cache_path,
    preprocess_record,
)
from .data.resample import resample_indices
from .methods import Method, evaluate, spot
from .metrics import MetricTable, evaluate_videos, labels_to_intervals
from .suite import RENDER_VERSION, SUITE_VERSION
from .suite.clips import ClipSpec, RenderedClip, ensure_rendered, suite_clips
from .suite.real import REAL_CLIPS, RealClip

if TYPE_CHECKING:
    from .data.align import FaceAligner

log = logging.getLogger(__name__)

CSV_FIELDS = ["method", "vid", "pred_onset", "pred_offset", "type", "score", "onset_s", "offset_s"]


def align_records(
    records: list[VideoRecord], cache_dir: Path, desc: str, workers: int = 1,
    settings: PreprocessSettings | None = None,
) -> list[AlignedVideo | None]:
    """Each record through the product's preprocessing (``settings``: the default; cached by
    video id and settings); ``workers`` processes, each with its own aligner, share the
    uncached ones. A clip in which the aligner finds no face at all is None (logged): the
    product would spot nothing in it."""
    settings = settings or PreprocessSettings()
    todo = [r for r in records if not cache_path(cache_dir, r.video_id, settings).exists()]
    if workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            run = partial(_align_or_none, cache_dir=cache_dir, settings=settings)
            for _ in tqdm(pool.map(run, todo), total=len(todo), desc=desc, unit="clip"):
                pass
    with settings.make_aligner() as aligner:
        return [_align_or_none(r, cache_dir, settings, aligner)
                for r in tqdm(records, desc=desc, unit="clip", disable=not todo or workers > 1)]


def _align_or_none(
    record: VideoRecord, cache_dir: Path, settings: PreprocessSettings,
    aligner: FaceAligner | None = None,
) -> AlignedVideo | None:
    try:
        return preprocess_record(record, aligner, cache_dir, settings)
    except PreprocessError as e:
        log.warning("%s", e)
        return None


def slot_labels(record: VideoRecord, n_frames: int) -> np.ndarray:
    """The per-slot labels preprocessing gives a record of ``n_frames`` source frames (for a
    clip without any face, which preprocessing cannot align)."""
    index = resample_indices([i / record.fps for i in range(n_frames)], MODEL_FPS)
    return labels_from_intervals(record.intervals, n_frames)[index]


def suite_records(clips: list[RenderedClip]) -> list[VideoRecord]:
    return [VideoRecord(c.spec.video_id, c.spec.still, float(c.spec.fps), c.path, list(c.labels),
                        dataset=f"independent-v{SUITE_VERSION}") for c in clips]


GROUPINGS: tuple[tuple[str, Callable[[ClipSpec], str]], ...] = (
    ("stratum", lambda s: s.stratum),
    ("talking", lambda s: "talking" if s.talking else "calm"),
    ("stratum x talking", lambda s: f"{s.stratum}, {'talking' if s.talking else 'calm'}"),
    ("fps", lambda s: f"{s.fps} FPS"),
    ("resolution", lambda s: f"{s.height}p"),
)
"""How the suite's clips are grouped in every table, one grouping after another."""


def suite_groups(clips: list[RenderedClip]) -> dict[str, list[int]]:
    """Clip indices of each reported group: all, then each value of each of :data:`GROUPINGS`
    in the order the clips first show it. A group holding the same clips as one before it is
    left out (all subtle clips talk: "subtle, talking" would repeat "subtle")."""
    groups: dict[str, list[int]] = {"all": list(range(len(clips)))}
    for _, key in GROUPINGS:
        part: dict[str, list[int]] = {}
        for i, c in enumerate(clips):
            part.setdefault(key(c.spec), []).append(i)
        for name, idx in part.items():
            if idx not in groups.values():
                groups[name] = idx
    return groups


def score_independent(
    methods: list[Method], videos: list[AlignedVideo | None], groups: dict[str, list[int]],
    csv_rows: list[dict] | None = None,
    faceless: dict[int, tuple[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, dict[str, MetricTable]]]:
    """{method: {"groups": {group: table}, "videos": {video id: table}}}. A video that is None
    had no face anywhere: every method predicts nothing there, against the slot labels of
    ``faceless[index] = (video id, labels)``."""
    found = [i for i, v in enumerate(videos) if v is not None]
    out = {}
    for m in methods:
        scored = evaluate(m, [videos[i] for i in found], csv_rows)
        rows: list = [None] * len(videos)
        for i, r in zip(found, scored, strict=True):
            rows[i] = r
        for i, (_, labels) in (faceless or {}).items():
            rows[i] = ([], labels_to_intervals(labels), len(labels))
        out[m.name] = {
            "groups": {g: evaluate_videos([rows[i] for i in idx]) for g, idx in groups.items()},
            "videos": {_vid(videos, faceless, i): evaluate_videos([rows[i]])
                       for i in range(len(videos))},
        }
    return out


def _vid(videos: list, faceless: dict | None, i: int) -> str:
    return videos[i].video_id if videos[i] is not None else (faceless or {})[i][0]


def face_found(video: AlignedVideo | None) -> float:
    """Percent of a clip's aligned source frames in which the aligner found a face."""
    if video is None:
        return 0.0
    n = len(np.unique(video.source_index))
    return 100.0 * (n - video.n_missing) / n


def clip_table(clips: list[RenderedClip], videos: list[AlignedVideo | None]) -> str:
    lines = ["| clip | stratum | talking | FPS | frame | s | kbit/s | ME | MaE "
             "| face found (% of frames) |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for c, v in zip(clips, videos, strict=True):
        s, n_me = c.spec, sum(1 for *_, lab in c.labels if lab == 1)
        lines.append(f"| {s.video_id} | {s.stratum} | {'yes' if s.talking else 'no'} | {s.fps} "
                     f"| {s.width}x{s.height} | {s.duration_s:g} | {s.kbps} | {n_me} "
                     f"| {len(c.labels) - n_me} | {face_found(v):.1f} |")
    return "\n".join(lines) + "\n"


COLUMNS = "ME F1 | MaE F1 | overall F1 | TP / FP / FN | ME predicted / right / true |"
RULE = "|---|---|---:|---:|---:|---|---|"


def independent_tables(scores: dict) -> str:
    """Markdown: every method x group, then every video x method."""
    lines = [f"| method | videos | {COLUMNS}", RULE]
    for name, s in scores.items():
        for g, t in s["groups"].items():
            lines.append(_row(f"{name} | {g} ({t.n_videos})", t))
    lines += ["", f"| video | method | {COLUMNS}", RULE]
    first = next(iter(scores.values()))
    for vid in first["videos"]:
        for name, s in scores.items():
            lines.append(_row(f"{vid} | {name}", s["videos"][vid]))
    return "\n".join(lines) + "\n"


def _me_counts(t: MetricTable) -> str:
    c = t.counts["ME"]
    return f"{c.tp + c.fp} / {c.tp} / {c.tp + c.fn}"


def _row(prefix: str, t: MetricTable) -> str:
    c = t.counts["overall"]
    return (f"| {prefix} | {t.f1['ME']:.1f} | {t.f1['MaE']:.1f} | **{t.f1_overall:.1f}** | "
            f"{c.tp} / {c.fp} / {c.fn} | {_me_counts(t)} |")


def tracked_slots(video: AlignedVideo) -> np.ndarray:
    """(N,) bool: the slot's source frame showed a face. Preprocessing holds the previous crop
    on a frame without a face (leading ones take the first found), so a distinct source frame
    whose crop equals the previous distinct frame's crop byte for byte is a frame without a face
    (a real camera never repeats a crop exactly: sensor noise). The first frame of a run counts
    as tracked, so a clip that starts without a face gains one frame."""
    unique, first = np.unique(video.source_index, return_index=True)
    crops = video.crops[first]
    held = np.zeros(len(unique), bool)
    held[1:] = [np.array_equal(crops[i], crops[i - 1]) for i in range(1, len(unique))]
    face = dict(zip(unique.tolist(), (~held).tolist(), strict=True))
    return np.array([face[int(s)] for s in video.source_index])


def segments(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """Inclusive runs of True at least ``min_len`` long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if b - a >= min_len]


def slice_video(video: AlignedVideo, a: int, b: int) -> AlignedVideo:
    lm = None if video.landmarks is None else video.landmarks[a : b + 1]
    return replace(video, video_id=f"{video.video_id}[{a}:{b}]", crops=video.crops[a : b + 1],
                   labels=video.labels[a : b + 1], source_index=video.source_index[a : b + 1],
                   landmarks=lm)


def events_per_minute(
    methods: list[Method], videos: list[AlignedVideo | None], clips: tuple[RealClip, ...]
) -> list[dict]:
    """One row per (method, clip): tracked seconds, ME and MaE events, and their rates."""
    rows = []
    for m in methods:
        for clip, v in zip(clips, videos, strict=True):
            runs = [] if v is None else segments(tracked_slots(v), m.merger.window_frames)
            n_me = n_mae = 0
            for a, b in runs:
                for _, _, label in spot(m, slice_video(v, a, b)).intervals:
                    n_me += label == 1
                    n_mae += label == 2
            seconds = sum(b - a + 1 for a, b in runs) / MODEL_FPS
            rows.append({"method": m.name, "clip": clip.name,
                         "generator_still": clip.generator_still, "tracked_s": seconds,
                         "ME": n_me, "MaE": n_mae})
    return rows


def real_tables(rows: list[dict]) -> str:
    """Markdown: per clip, then totals for clips with and without a generator still's person."""
    def rate(n: int, s: float) -> str:
        return f"{60.0 * n / s:.1f}" if s > 0 else "-"

    lines = ["| method | clip | tracked s | ME | MaE | ME / min | MaE / min |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['clip']} | {r['tracked_s']:.1f} | {r['ME']} | "
                     f"{r['MaE']} | {rate(r['ME'], r['tracked_s'])} | "
                     f"{rate(r['MaE'], r['tracked_s'])} |")
    for label, keep in (("people no still shows", lambda r: r["generator_still"] is None),
                        ("people of generator stills", lambda r: r["generator_still"]),
                        ("all clips", lambda r: True)):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["method"] == method and keep(r)]
            s = sum(r["tracked_s"] for r in sel)
            me, mae = sum(r["ME"] for r in sel), sum(r["MaE"] for r in sel)
            lines.append(f"| **{method}** | **{label}** ({len(sel)}) | {s:.1f} | {me} | {mae} | "
                         f"**{rate(me, s)}** | **{rate(mae, s)}** |")
    return "\n".join(lines) + "\n"


def run_suites(
    which: str, methods: list[Method], aligned_cache: Path, suite_cache: Path,
    csv_path: Path | None = None, json_path: Path | None = None, workers: int = 2,
) -> dict:
    """``fesnet-eval --suite``: print the tables, write the CSV of predictions (independent)
    and the JSON of every number; returns that JSON document."""
    doc: dict = {"suite_version": SUITE_VERSION, "render_version": RENDER_VERSION,
                 "methods": [m.name for m in methods]}
    if which in ("independent", "both"):
        clips = ensure_rendered(suite_clips(), suite_cache, workers)
        records = suite_records(clips)
        videos = align_records(records, aligned_cache, "align suite", workers)
        faceless = {i: (r.video_id, slot_labels(r, c.n_frames))
                    for i, (r, c, v) in enumerate(zip(records, clips, videos, strict=True))
                    if v is None}
        csv_rows: list[dict] = []
        scores = score_independent(methods, videos, suite_groups(clips), csv_rows, faceless)
        print(f"\nindependent suite v{SUITE_VERSION} ({len(clips)} clips, renderer "
              f"v{RENDER_VERSION}):\n")
        print(clip_table(clips, videos))
        print(independent_tables(scores))
        doc["independent"] = {name: {k: {g: t.to_dict() for g, t in v.items()}
                                     for k, v in s.items()} for name, s in scores.items()}
        doc["clips"] = {c.spec.video_id: {"path": str(c.path), "labels": c.labels,
                                          "stratum": c.spec.stratum, "talking": c.spec.talking,
                                          "face_found_pct": face_found(v)}
                        for c, v in zip(clips, videos, strict=True)}
        if csv_path is not None:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with csv_path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                w.writeheader()
                w.writerows(csv_rows)
            print(f"predictions: {csv_path}")
    if which in ("real", "both"):
        records = [VideoRecord(f"real-{c.name}", c.name, _fps(c.path), c.path, [],
                               dataset="real") for c in REAL_CLIPS]
        videos = align_records(records, aligned_cache, "align real clips")
        rows = events_per_minute(methods, videos, REAL_CLIPS)
        print("\nreal clips, events per minute of tracked face (no labels):\n")
        print(real_tables(rows))
        doc["real"] = rows
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=1))
    return doc


def _fps(path: Path) -> float:
    """A file's nominal frame rate (what preprocessing spaces its frames by)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    if fps <= 0:
        raise ValueError(f"{path}: no frame rate")
    return fps
