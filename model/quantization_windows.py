"""INT8/FP8 quantization windows: what sets TensorRT's tensor scales, the file that carries them,
and drawing them from aligned videos. (Per-person thresholds are calibration/'s; this is the
model's quantization, which TensorRT calls calibration.)

Post-training quantisation sets each tensor's scale from the activations it sees on calibration
inputs, so those inputs must look like deployment: the same aligned 112x112 RGB crops on the
60 Hz timeline, whole ``T``-frame windows (the window head's discrepancy against the reference
frame is part of what is calibrated), many identities, and both resting and expressive windows
(an expression's activations are the large ones; neutral-only data would clip them).
:func:`sample_windows` draws them from aligned videos (the training split), balanced over videos
and with a chosen fraction that overlap a labelled expression (``fesnet-calibrate int8``).

The file: an .npz with one array "windows", uint8 of shape (N, T, 112, 112, 3): N windows of
T = cfg.window_frames aligned RGB face crops, exactly what the spotter feeds the model. Optional
array "source" (N,) of str names where each window came from, for the record only. Optional array
"geom" float32 (N, T, G): the windows' geometry-channel vectors (model/geometry.py), required to
calibrate a network that reads them. A few hundred windows from the deployment's own cameras is
the usual size (modelopt's guide: 128-512 samples).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .geometry import GEOMETRY_DIMS, GeometryConfig, geometry_features
from .graphs import atomic_write

CALIBRATION_KEY = "windows"
GEOMETRY_KEY = "geom"


class QuantizationDataError(ValueError):
    """A calibration file is missing or not of the documented format."""


def write_calibration_windows(
    path: str | Path,
    windows: np.ndarray,
    source: list[str] | None = None,
    geom: np.ndarray | None = None,
) -> Path:
    """Write calibration windows (N, T, 112, 112, 3) uint8 (and their geometry vectors) in the
    format above."""
    path = Path(path)
    _check_calibration(windows, path)
    arrays = {CALIBRATION_KEY: windows}
    if geom is not None:
        if geom.shape[:2] != windows.shape[:2] or geom.ndim != 3:
            raise QuantizationDataError(f"geom {geom.shape} does not match windows {windows.shape}")
        arrays[GEOMETRY_KEY] = geom.astype(np.float32)
    if source is not None:
        if len(source) != len(windows):
            raise QuantizationDataError(f"{len(source)} source names for {len(windows)} windows")
        arrays["source"] = np.asarray(source, dtype=str)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(path, buf.getvalue())
    return path


def read_calibration_windows(path: str | Path, window_frames: int | None = None) -> np.ndarray:
    """Read calibration windows (N, T, 112, 112, 3) uint8; raise QuantizationDataError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise QuantizationDataError(f"calibration file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if CALIBRATION_KEY not in z.files:
                raise QuantizationDataError(
                    f"{path} has arrays {z.files}, expected {CALIBRATION_KEY!r} "
                    f"(uint8 (N, T, 112, 112, 3))"
                )
            windows = z[CALIBRATION_KEY]
    except (OSError, ValueError) as e:
        if isinstance(e, QuantizationDataError):
            raise
        raise QuantizationDataError(f"cannot read calibration file {path}: {e}") from e
    _check_calibration(windows, path, window_frames)
    return windows


def read_calibration_geometry(path: str | Path) -> np.ndarray | None:
    """The geometry vectors (N, T, G) float32 stored beside the windows, or None."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return z[GEOMETRY_KEY] if GEOMETRY_KEY in z.files else None
    except (OSError, ValueError) as e:
        raise QuantizationDataError(f"cannot read calibration file {path}: {e}") from e


def _check_calibration(windows: np.ndarray, path: Path, window_frames: int | None = None) -> None:
    ok = windows.dtype == np.uint8 and windows.ndim == 5 and windows.shape[-1] == 3
    ok = ok and len(windows) > 0 and windows.shape[2] == windows.shape[3]
    if ok and window_frames is not None:
        ok = windows.shape[1] == window_frames
    if not ok:
        want = f"(N>0, {window_frames or 'T'}, S, S, 3) uint8"
        raise QuantizationDataError(
            f"{path}: windows are {windows.shape} {windows.dtype}, want {want}"
        )


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
