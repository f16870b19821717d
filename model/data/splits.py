"""Evaluation splits over videos: leave-one-subject-out and k-fold by video.

Both work on anything with ``video_id`` and ``subject`` (VideoRecord, AlignedVideo). In every
split a video is in exactly one of train/test, and with LOSO no subject is on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np


class HasSubject(Protocol):
    @property
    def video_id(self) -> str: ...

    @property
    def subject(self) -> str: ...


V = TypeVar("V", bound=HasSubject)


def leave_one_subject_out(records: Sequence[V]) -> list[tuple[str, list[V], list[V]]]:
    """One (held-out subject, train, test) split per subject, subjects in sorted order."""
    subjects = sorted({r.subject for r in records})
    return [
        (s, [r for r in records if r.subject != s], [r for r in records if r.subject == s])
        for s in subjects
    ]


def kfold_by_video(
    records: Sequence[V], k: int = 5, seed: int = 0
) -> list[tuple[list[V], list[V]]]:
    """k (train, test) splits; videos are shuffled by ``seed`` and dealt into k near-equal folds."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if len(records) < k:
        raise ValueError(f"k={k} folds need at least {k} videos, got {len(records)}")
    ordered = sorted(records, key=lambda r: r.video_id)
    order = np.random.default_rng(seed).permutation(len(ordered))
    folds = [set(order[i::k].tolist()) for i in range(k)]
    return [
        (
            [r for i, r in enumerate(ordered) if i not in fold],
            [r for i, r in enumerate(ordered) if i in fold],
        )
        for fold in folds
    ]
