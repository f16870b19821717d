"""What every benchmark shares: percentiles of durations, interleaved timing (every item under
the same machine load), the input crops (a real face, moving) and a description of the machine."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds (and the sample count) of durations in seconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {"n": 0}
    out = {f"p{p}_ms": round(float(np.percentile(a, p)), 4) for p in PERCENTILES}
    out["mean_ms"] = round(float(a.mean()), 4)
    out["n"] = int(a.size)
    return out


def median_s(samples: Sequence[float]) -> float:
    return float(np.median(samples))


# --- inputs ------------------------------------------------------------------------------------


def face_crops(n: int, size: int = 112, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) RGB uint8: a shipped real face, slowly moving (small rotation, shift and
    scale per frame) so optical flow has real motion to track."""
    import cv2

    from fesnet.model.data.identities import FACES_DIR

    bgr = cv2.imread(str(FACES_DIR / "door-man.jpg"), cv2.IMREAD_COLOR)
    if bgr is None:
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        base = cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA), 4)
    out = np.empty((n, size, size, 3), np.uint8)
    c = size / 2
    for i in range(n):
        phase = 2 * np.pi * i / 60
        m = cv2.getRotationMatrix2D((c, c), 2.0 * np.sin(phase), 1.0 + 0.02 * np.sin(2 * phase))
        m[:, 2] += (1.5 * np.sin(phase), 1.0 * np.cos(phase))
        out[i] = cv2.warpAffine(base, m, (size, size), borderMode=cv2.BORDER_REFLECT)
    return out


# --- timing ------------------------------------------------------------------------------------


def time_interleaved(
    calls: dict[Any, Callable[[], Any]], seconds: float, min_rounds: int = 5, warmup: int = 2
) -> dict[Any, list[float]]:
    """Durations of every call, taken in rounds (each round calls each once, in order).

    On a shared machine the load changes from second to second; interleaving puts every backend
    under the same conditions, so the ratios between them stay meaningful when absolute numbers
    do not.
    """
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples: dict[Any, list[float]] = {k: [] for k in calls}
    end = time.perf_counter() + seconds
    rounds = 0
    while rounds < min_rounds or time.perf_counter() < end:
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
        rounds += 1
    return samples


# --- the machine -------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m_at_start": load_avg(),
    }
    for mod in ("torch", "onnxruntime", "cv2", "numpy", "mediapipe"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:
        info["cuda"] = None
    return info


def load_avg() -> float | None:
    """1-minute load average: other processes on a shared machine skew every timing."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
