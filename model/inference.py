"""Offline sliding-window inference over a whole aligned video.

Uses exactly what the streaming spotter uses: the backend's ``encode`` once per frame, its
``window`` on every ``stride``-th 32-frame window (first frame = reference), and the same
``IntervalMerger`` (via ``merge_offline``). tests/test_streaming_equivalence.py proves the
streaming pipeline gives the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import Backend
from .geometry import geometry_features
from .merger import MergerConfig, MergerEvent, events_to_intervals, merge_offline


def window_starts(n_frames: int, window_frames: int, stride_frames: int) -> list[int]:
    """Starts of the windows a stream of ``n_frames`` slots gets: every ``stride`` slots while a
    full window fits, plus one window flush with the end (the streaming flush does the same)."""
    if stride_frames < 1:
        raise ValueError(f"stride_frames must be >= 1, got {stride_frames}")
    if n_frames < window_frames:
        return []
    starts = list(range(0, n_frames - window_frames + 1, stride_frames))
    if starts[-1] != n_frames - window_frames:
        starts.append(n_frames - window_frames)
    return starts


def gather_windows(feats: np.ndarray, starts: list[int], window_frames: int) -> np.ndarray:
    """(N, ...) per-frame features -> (len(starts), T, ...) windows."""
    idx = np.asarray(starts)[:, None] + np.arange(window_frames)[None, :]
    return feats[idx]


@dataclass
class VideoPrediction:
    starts: list[int]
    window_probs: np.ndarray  # (W, T, 3)
    fused_scores: np.ndarray  # (N, 3) per-slot fused probabilities (what the merger committed)
    events: list[MergerEvent]
    intervals: list[tuple[int, int, int]]  # final (onset, offset, label) in slots


def encode_video(
    backend: Backend, crops: np.ndarray, batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame features of every crop, each encoded once: (x_prime (N, ...), x_atten (N, ...))."""
    parts = [backend.encode(crops[i : i + batch]) for i in range(0, len(crops), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def score_windows(
    backend: Backend,
    x_prime: np.ndarray,
    x_atten: np.ndarray,
    geom: np.ndarray | None,
    starts: list[int],
    window_frames: int,
    batch: int = 16,
) -> np.ndarray:
    """Window probabilities (W, T, 3) for the windows starting at ``starts`` over per-frame
    features (and geometry vectors, for a model or peer that reads them)."""
    probs = []
    for i in range(0, len(starts), batch):
        s = starts[i : i + batch]
        xp = gather_windows(x_prime, s, window_frames)
        xa = gather_windows(x_atten, s, window_frames)
        if geom is None:
            probs.append(backend.window(xp, xa))
        else:
            probs.append(backend.window(xp, xa, gather_windows(geom, s, window_frames)))
    if not probs:
        return np.zeros((0, window_frames, 3), np.float32)
    return np.concatenate(probs).astype(np.float32)


def video_geometry(backend: Backend, video: Any) -> np.ndarray | None:
    """The geometry vectors a backend reads for an aligned video (``AlignedVideo``-like:
    ``landmarks``, ``video_id``), or None when the backend reads no geometry channel."""
    cfg = getattr(backend, "geometry", None)
    if cfg is None:
        return None
    if getattr(video, "landmarks", None) is None:
        raise ValueError(f"{video.video_id}: no landmarks cached for the geometry channel; "
                         "delete its aligned cache file so preprocessing runs again")
    return geometry_features(video.landmarks, cfg)


def predict_windows(
    backend: Backend,
    crops: np.ndarray,
    window_frames: int,
    stride_frames: int,
    geom: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray]:
    """Encode every frame once, then score every window. Returns (starts, probs (W, T, 3)).
    The window length and stride are the loaded model's (``Runtime``), never assumed here."""
    starts = window_starts(len(crops), window_frames, stride_frames)
    if not starts:
        return [], np.zeros((0, window_frames, 3), np.float32)
    x_prime, x_atten = encode_video(backend, crops)
    return starts, score_windows(backend, x_prime, x_atten, geom, starts, window_frames)


def spot_video(
    backend: Backend,
    crops: np.ndarray,
    merger_cfg: MergerConfig,
    stride_frames: int,
    geom: np.ndarray | None = None,
) -> VideoPrediction:
    """Aligned 60 Hz crops (N, 112, 112, 3) -> events and intervals on the slot timeline.
    ``geom`` (N, GEOMETRY_DIMS): the video's geometry vectors, for backends that read them."""
    starts, probs = predict_windows(backend, crops, merger_cfg.window_frames, stride_frames, geom)
    return prediction_from_windows(starts, probs, merger_cfg)


def prediction_from_windows(
    starts: list[int], probs: np.ndarray, merger_cfg: MergerConfig
) -> VideoPrediction:
    """Merge scored windows into events, as the streaming spotter does."""
    events, fused = merge_offline(starts, list(probs), merger_cfg)
    return VideoPrediction(
        starts=starts,
        window_probs=probs,
        fused_scores=fused,
        events=events,
        intervals=events_to_intervals(events),
    )
