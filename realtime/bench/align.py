"""The align thread's work per frame under each way of looking for other faces, on one clip.

The modes (``ALIGN_MODES``): ``before``, the aligner as it was before issue 16
(:class:`PointwiseAligner`: FaceMesh looks for 2 faces on every frame, its 468 landmarks are read
point by point in Python, the crop is warped from the BGR frame and flipped to RGB);
``every-frame``, today's aligner with FaceMesh still looking for 2 faces on every frame;
``periodic``, the live default (FaceMesh follows one face, the face detector counts faces every
15th frame, the far-face finder looks for faces too small for FaceMesh); ``near-only``, the live
default without the far-face finder (the aligner before it).

Every mode gets its own :class:`~fesnet.realtime.tracking.FaceTracker` (so each keeps its own
video-mode tracking state) and sees every frame of the clip; the modes are timed frame by frame
in rotating order (A B C, B C A, C A B, ...), so they share the machine's load and the ratio
holds when the absolute numbers drift. The first mode is the reference: the others' crops are
compared with its crops, byte for byte.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .config import ALIGN_MODES, BenchConfig
from .timing import load_avg, percentiles_ms

log = logging.getLogger(__name__)


class PointwiseAligner:
    """The ``before`` mode: the project's first aligner, kept here as the yardstick of the
    aligner's speed. FaceMesh looks for 2 faces on every frame, the 468 landmarks are read point
    by point in Python, and the crop is warped from the BGR frame and flipped to RGB. It follows
    the face :func:`~fesnet.model.data.align.choose_face` picks and maps it onto the same template
    with the same transform as :class:`~fesnet.model.data.align.FaceAligner`, so its crops are
    comparable byte for byte; only how the work is done differs."""

    def __init__(self, crop_size: int = 112, max_faces: int = 2) -> None:
        import mediapipe as mp

        from fesnet.model.data.align import canonical_template

        self.crop_size = crop_size
        self._template = canonical_template(crop_size)
        self._mesh: Any = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=max_faces, refine_landmarks=False,
            min_detection_confidence=0.5, min_tracking_confidence=0.5
        )
        self._last_center: np.ndarray | None = None

    def warm_up(self) -> None:
        self._mesh.process(np.zeros((64, 64, 3), np.uint8))

    def reset(self) -> None:
        self._last_center = None

    def close(self) -> None:
        self._mesh.close()

    def align(self, frame_bgr: np.ndarray) -> Any:
        import cv2

        from fesnet.model.data.align import (
            N_LANDMARKS,
            AlignResult,
            choose_face,
            keypoints_from_landmarks,
            similarity_transform,
            validate_frame,
        )

        validate_frame(frame_bgr)
        h, w = frame_bgr.shape[:2]
        result = self._mesh.process(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        faces = [
            np.array([(p.x * w, p.y * h) for p in face.landmark[:N_LANDMARKS]], np.float32)
            for face in result.multi_face_landmarks or []
        ]
        if not faces:
            return AlignResult(crop=None, n_faces=0, landmarks=None, transform=None)
        landmarks = choose_face(faces, self._last_center)
        self._last_center = landmarks.mean(axis=0)
        matrix = similarity_transform(keypoints_from_landmarks(landmarks), self._template)
        size = (self.crop_size, self.crop_size)
        bgr = cv2.warpAffine(frame_bgr, matrix, size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return AlignResult(np.ascontiguousarray(bgr[:, :, ::-1]), len(faces), landmarks, matrix)


def _pointwise_aligner() -> PointwiseAligner:
    from fesnet.model.third_party_logs import ignore_known_warnings, native_stderr_filtered

    ignore_known_warnings()
    with native_stderr_filtered():
        aligner = PointwiseAligner()
        aligner.warm_up()
    return aligner


def make_aligner(mode: str) -> Callable[[], Any]:
    """The aligner factory of a mode of ``ALIGN_MODES``."""
    from ..tracking import ALIGNER_SETTINGS, mediapipe_aligner

    if mode == "before":
        return _pointwise_aligner
    if mode not in ALIGNER_SETTINGS:
        raise ValueError(f"unknown align mode {mode!r}; choose from {list(ALIGN_MODES)}")
    return functools.partial(mediapipe_aligner, **ALIGNER_SETTINGS[mode])


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
    from ..tracking import ALIGNER_SETTINGS, FaceTracker
    from ..types import Frame

    modes = list(config.align_modes)
    frames, fps = decode_frames(config.video)
    trackers = {m: FaceTracker(make_aligner=make_aligner(m)).open() for m in modes}
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
            for m in modes[i % len(modes) :] + modes[: i % len(modes)]:
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
                **ALIGNER_SETTINGS.get(m, {"count_faces_every_frames": None}),
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
