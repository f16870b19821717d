"""INT8/FP8 calibration windows: the file format calibration/ writes and TensorRT reads.

An .npz file with one array "windows", uint8 of shape (N, T, 112, 112, 3): N windows of
T = cfg.window_frames aligned RGB face crops, exactly what the spotter feeds the model. Optional
array "source" (N,) of str names where each window came from, for the record only. Optional array
"geom" float32 (N, T, G): the windows' geometry-channel vectors (model/geometry.py), required to
calibrate a network that reads them. A few hundred
windows from the deployment's own cameras is the usual size (modelopt's guide: 128-512 samples).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .graphs import atomic_write

CALIBRATION_KEY = "windows"
GEOMETRY_KEY = "geom"


class CalibrationError(ValueError):
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
            raise CalibrationError(f"geom {geom.shape} does not match windows {windows.shape}")
        arrays[GEOMETRY_KEY] = geom.astype(np.float32)
    if source is not None:
        if len(source) != len(windows):
            raise CalibrationError(f"{len(source)} source names for {len(windows)} windows")
        arrays["source"] = np.asarray(source, dtype=str)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(path, buf.getvalue())
    return path


def read_calibration_windows(path: str | Path, window_frames: int | None = None) -> np.ndarray:
    """Read calibration windows (N, T, 112, 112, 3) uint8; raise CalibrationError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if CALIBRATION_KEY not in z.files:
                raise CalibrationError(
                    f"{path} has arrays {z.files}, expected {CALIBRATION_KEY!r} "
                    f"(uint8 (N, T, 112, 112, 3))"
                )
            windows = z[CALIBRATION_KEY]
    except (OSError, ValueError) as e:
        if isinstance(e, CalibrationError):
            raise
        raise CalibrationError(f"cannot read calibration file {path}: {e}") from e
    _check_calibration(windows, path, window_frames)
    return windows


def read_calibration_geometry(path: str | Path) -> np.ndarray | None:
    """The geometry vectors (N, T, G) float32 stored beside the windows, or None."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return z[GEOMETRY_KEY] if GEOMETRY_KEY in z.files else None
    except (OSError, ValueError) as e:
        raise CalibrationError(f"cannot read calibration file {path}: {e}") from e


def _check_calibration(windows: np.ndarray, path: Path, window_frames: int | None = None) -> None:
    ok = windows.dtype == np.uint8 and windows.ndim == 5 and windows.shape[-1] == 3
    ok = ok and len(windows) > 0 and windows.shape[2] == windows.shape[3]
    if ok and window_frames is not None:
        ok = windows.shape[1] == window_frames
    if not ok:
        want = f"(N>0, {window_frames or 'T'}, S, S, 3) uint8"
        raise CalibrationError(f"{path}: windows are {windows.shape} {windows.dtype}, want {want}")
