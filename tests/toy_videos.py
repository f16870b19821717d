"""Toy aligned videos for training and evaluation tests: a still textured 'face' whose bright
patch (and, with landmarks, whose lip corners) move during one ME and one MaE."""

from __future__ import annotations

import dataclasses

import numpy as np

from fesnet.model.data.landmarks import CORNER_L, CORNER_R
from fesnet.model.data.preprocess import AlignedVideo


def toy_video(seed: int, n: int = 160) -> AlignedVideo:
    """A bright patch appears during an expression: short (ME, 20 frames, from frame 30) or
    long (MaE, 50 frames, from frame 90)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 120, (112, 112, 3), dtype=np.uint8)
    crops = np.repeat(base[None], n, axis=0)
    labels = np.zeros(n, np.int64)
    for on, length, label in ((30, 20, 1), (90, 50, 2)):
        crops[on : on + length, 60:80, 30:80] = 230
        labels[on : on + length] = label
    return AlignedVideo(
        video_id=f"toy{seed}", subject="toy", crops=crops, labels=labels,
        source_index=np.arange(n), fps_source=60.0,
    )


def with_landmarks(video: AlignedVideo, base: np.ndarray, seed: int) -> AlignedVideo:
    """The toy video with landmarks: a face shape with 0.2 px jitter whose lip corners move
    by 3 px during the expressions."""
    rng = np.random.default_rng(seed)
    pts = np.repeat(base[None], len(video), axis=0) + rng.normal(0, 0.2, (len(video), *base.shape))
    moving = video.labels > 0
    pts[np.ix_(moving, list(CORNER_L))] += (-2.0, -2.0)
    pts[np.ix_(moving, list(CORNER_R))] += (2.0, -2.0)
    return dataclasses.replace(video, landmarks=pts.astype(np.float32))
