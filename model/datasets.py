"""Which aligned videos training and evaluation use: one place, so both read the same splits.

- ``synthetic``: long videos generated from the shipped real faces (model/data/synthetic.py).
  Train and validation videos use the TRAIN identities (different seeds; some with a random
  neutral look); the test videos use the held-out TEST identities, never seen in training or
  threshold selection.
- ``casme2`` / ``sammlv``: the published layouts, k-fold by video (the paper's 5-fold protocol)
  or leave-one-subject-out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from .data.preprocess import AlignedVideo

if TYPE_CHECKING:
    from .data.synthetic import SyntheticSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticSetConfig:
    """Sizes of the synthetic set. Video counts are per identity.

    Look videos (train and val only) each draw a random neutral look (``synthetic.random_look``:
    resting asymmetry, face shape, room and side lighting). Without them the model learns the
    identity images' own look: a changed look lifted its resting p_expr median from 0.04 to as
    much as 0.92 (docs/CALIBRATION.md)."""

    train_videos_per_identity: int = 2
    val_videos_per_identity: int = 1
    test_videos_per_identity: int = 2
    duration_s: float = 40.0
    seed: int = 0
    train_look_videos_per_identity: int = 2
    val_look_videos_per_identity: int = 1


def synthetic_jobs(
    split: str, cfg: SyntheticSetConfig = SyntheticSetConfig()
) -> list[tuple[str, SyntheticSpec, int]]:
    """(identity, spec, seed) of every video of one split. Plain videos keep the seeds they had
    before look videos existed, so their caches stay valid; look videos use seeds +500."""
    from .data import synthetic

    train_ids, test_ids = synthetic.train_test_identities()
    counts = {
        "train": (train_ids, cfg.train_videos_per_identity, cfg.train_look_videos_per_identity, 0),
        "val": (train_ids, cfg.val_videos_per_identity, cfg.val_look_videos_per_identity, 1000),
        "test": (test_ids, cfg.test_videos_per_identity, 0, 2000),
    }
    if split not in counts:
        raise ValueError(f"unknown split {split!r}: train, val or test")
    ids, n, n_look, offset = counts[split]
    plain = synthetic.SyntheticSpec(duration_s=cfg.duration_s)
    jobs = []
    for i, identity in enumerate(ids):
        for k in range(n):
            jobs.append((identity, plain, cfg.seed * 100_000 + offset + i * 10 + k))
        for k in range(n_look):
            look = synthetic.random_look(np.random.default_rng([cfg.seed, offset, i, k]))
            spec = synthetic.SyntheticSpec(duration_s=cfg.duration_s, **look)
            jobs.append((identity, spec, cfg.seed * 100_000 + offset + 500 + i * 10 + k))
    return jobs


def synthetic_split(
    split: str, cache_dir: Path, cfg: SyntheticSetConfig = SyntheticSetConfig()
) -> list[AlignedVideo]:
    """Generate (or read from the cache) and align one split of the synthetic set."""
    from .data.align import FaceAligner
    from .data.preprocess import preprocess_synthetic

    jobs = synthetic_jobs(split, cfg)
    videos = []
    with FaceAligner() as aligner:
        for identity, spec, seed in tqdm(
            jobs, desc=f"synthetic {split}", unit="video", disable=len(jobs) < 2
        ):
            video = preprocess_synthetic(identity, spec, seed, aligner=aligner, cache_dir=cache_dir)
            videos.append(video)
    n_look = sum(spec.rest_aus != () for _, spec, _ in jobs)
    log.info("synthetic %s: %d videos (%d with a varied look)", split, len(videos), n_look)
    return videos


def real_split(
    data: str, root: Path, cache_dir: Path, fold: int, folds: int, seed: int
) -> tuple[list[AlignedVideo], list[AlignedVideo]]:
    """CAS(ME)^2 or SAMM-LV: (train, test) videos of one fold. folds=0: leave-one-subject-out,
    with ``fold`` indexing the held-out subject."""
    from .data.align import FaceAligner
    from .data.preprocess import preprocess_record
    from .data.splits import kfold_by_video, leave_one_subject_out

    if data == "casme2":
        from .data.casme2 import load_records
    elif data == "sammlv":
        from .data.sammlv import load_records
    else:
        raise ValueError(f"unknown dataset {data!r}: casme2 or sammlv")
    records = load_records(Path(root))
    splits = leave_one_subject_out(records) if folds == 0 else kfold_by_video(records, folds, seed)
    if not 0 <= fold < len(splits):
        raise ValueError(f"fold {fold} out of range: {len(splits)} folds")
    train_recs, test_recs = splits[fold]
    with FaceAligner() as aligner:
        train = [preprocess_record(r, aligner, Path(cache_dir)) for r in train_recs]
        test = [preprocess_record(r, aligner, Path(cache_dir)) for r in test_recs]
    return train, test
