"""INT8/FP8 calibration data for the TensorRT path: representative aligned-face windows.

Post-training quantisation sets each tensor's scale from the activations it sees on calibration
inputs, so those inputs must look like deployment: the same aligned 112x112 RGB crops on the
60 Hz timeline, whole ``T``-frame windows (the window head's discrepancy against the reference
frame is part of what is calibrated), many identities, and both resting and expressive windows
(an expression's activations are the large ones; neutral-only data would clip them).

:func:`sample_windows` draws windows from aligned videos (the training split), balanced over
videos and with a chosen fraction that overlap a labelled expression; :func:`write_windows`
stores them in the one format ``fesnet.model.calibration_data`` defines
(``write_calibration_windows``: ``.npz`` with ``windows`` uint8 (N, T, 112, 112, 3) and
``source`` names).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fesnet.model.calibration_data import read_calibration_windows, write_calibration_windows
from fesnet.model.geometry import GEOMETRY_DIMS, GeometryConfig, geometry_features


def sample_windows(
    videos: Sequence[Any],
    n_windows: int,
    window_frames: int,
    expression_fraction: float = 0.5,
    seed: int = 0,
    geometry: GeometryConfig | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray | None]:
    """Draw ``n_windows`` windows (uint8 (N, T, S, S, 3)), their ``video_id@start`` names and,
    with ``geometry``, their geometry vectors (N, T, G) (else None; videos need landmarks).

    Videos (``AlignedVideo``-like: ``video_id``, ``crops``, ``labels``) take turns so every
    video contributes about equally; within a video, a window overlapping a labelled expression
    is drawn with probability ``expression_fraction`` (when it has one). No window is drawn
    twice. Deterministic in ``seed``.
    """
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    if not 0.0 <= expression_fraction <= 1.0:
        raise ValueError(f"expression_fraction must be in [0, 1], got {expression_fraction}")
    rng = np.random.default_rng(seed)
    pools: list[tuple[Any, list[int], list[int]]] = []
    for v in videos:
        n = len(v.crops)
        if n < window_frames:
            continue
        starts = np.arange(n - window_frames + 1)
        labels = np.asarray(v.labels)
        busy = np.convolve(labels != 0, np.ones(window_frames), "valid") > 0  # (n - T + 1,)
        expr, neutral = list(rng.permutation(starts[busy])), list(rng.permutation(starts[~busy]))
        pools.append((v, expr, neutral))
    if not pools:
        raise ValueError(f"no video is at least {window_frames} frames long")
    capacity = sum(len(e) + len(n) for _, e, n in pools)
    if capacity < n_windows:
        raise ValueError(f"only {capacity} distinct windows available, {n_windows} requested")
    picked: list[tuple[Any, int]] = []
    order = list(rng.permutation(len(pools)))
    while len(picked) < n_windows:
        for i in order:
            if len(picked) == n_windows:
                break
            v, expr, neutral = pools[i]
            want_expr = rng.random() < expression_fraction
            pool = expr if (want_expr and expr) or not neutral else neutral
            if pool:
                picked.append((v, int(pool.pop())))
    first = picked[0][0].crops
    out = np.empty((n_windows, window_frames, *first.shape[1:]), np.uint8)
    geom = None
    vectors: dict[str, np.ndarray] = {}
    if geometry is not None:
        geom = np.empty((n_windows, window_frames, GEOMETRY_DIMS), np.float32)
        vectors = {v.video_id: geometry_features(v.landmarks, geometry) for v, _ in picked}
    names = []
    for k, (v, s) in enumerate(picked):
        out[k] = v.crops[s : s + window_frames]
        if geom is not None:
            geom[k] = vectors[v.video_id][s : s + window_frames]
        names.append(f"{v.video_id}@{s}")
    return out, names, geom


def write_windows(
    path: str | Path, windows: np.ndarray, names: list[str], geom: np.ndarray | None = None
) -> Path:
    """Write in the TensorRT path's format and read it back through its own reader."""
    path = write_calibration_windows(path, windows, names, geom)
    read_calibration_windows(path, windows.shape[1])
    return path
