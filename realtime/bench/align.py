"""The align thread's work per frame under each way of looking for other faces, on one clip.

Every mode gets its own :class:`~fesnet.realtime.tracking.FaceTracker` (so each keeps its own
video-mode tracking state) and sees every frame of the clip; the modes are timed frame by frame
in alternating order (A B, B A, ...), so they share the machine's load and the ratio holds when
the absolute numbers drift. The first mode is the reference: the others' crops are compared with
its crops, byte for byte.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import numpy as np

from .config import BenchConfig
from .timing import load_avg, percentiles_ms

log = logging.getLogger(__name__)


def decode_frames(video: str, limit: int | None = None) -> tuple[list[np.ndarray], float]:
    """The clip's BGR frames (all, or the first ``limit``) and its frame rate."""
    import cv2

    cap = cv2.VideoCapture(video)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames: list[np.ndarray] = []
    while limit is None or len(frames) < limit:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames, float(fps)


def run_align(config: BenchConfig, report: dict[str, Any]) -> None:
    """``report["align"]``: per mode the tracker's time per frame, and its crops against the
    reference mode's."""
    if config.video is None or not config.align_modes:
        report["align"] = {"skipped": "no --video given" if config.video is None else "no modes"}
        return
    from ..tracking import FACE_COUNTING, FaceTracker, mediapipe_aligner
    from ..types import Frame

    modes = list(config.align_modes)
    frames, fps = decode_frames(config.video)
    trackers = {
        m: FaceTracker(make_aligner=functools.partial(mediapipe_aligner, FACE_COUNTING[m])).open()
        for m in modes
    }
    samples: dict[str, list[float]] = {m: [] for m in modes}
    same = {m: 0 for m in modes}
    max_diff = {m: 0 for m in modes}
    faces_equal = {m: 0 for m in modes}
    load_start = load_avg()
    log.info("align: %s interleaved on %d frames", ", ".join(modes), len(frames))
    try:
        for i, image in enumerate(frames):
            frame = Frame(image, i, i / fps, time.monotonic_ns())
            results = {}
            for m in modes if i % 2 == 0 else modes[::-1]:
                t0 = time.perf_counter()
                results[m] = trackers[m].update(frame)
                samples[m].append(time.perf_counter() - t0)
            ref = results[modes[0]]
            for m, res in results.items():
                faces_equal[m] += res.n_faces == ref.n_faces
                if res.crop is None or ref.crop is None:
                    same[m] += res.crop is None and ref.crop is None
                    continue
                diff = int(np.abs(res.crop.astype(np.int16) - ref.crop).max())
                same[m] += diff == 0
                max_diff[m] = max(max_diff[m], diff)
    finally:
        for tracker in trackers.values():
            tracker.close()
    ref_s = np.asarray(samples[modes[0]])
    n = len(frames)
    report["align"] = {
        "video": config.video,
        "frames": n,
        "reference": modes[0],
        "load_avg_1m": [load_start, load_avg()],
        "modes": {
            m: {
                "count_faces_every_frames": FACE_COUNTING[m],
                "per_frame": percentiles_ms(samples[m]),
                "p50_vs_reference": round(float(np.median(samples[m]) / np.median(ref_s)), 3),
                "mean_vs_reference": round(float(np.mean(samples[m]) / np.mean(ref_s)), 3),
                "crops_identical": round(same[m] / n, 4) if n else None,
                "crop_max_abs_diff": max_diff[m],
                "n_faces_equal": round(faces_equal[m] / n, 4) if n else None,
            }
            for m in modes
        },
    }
