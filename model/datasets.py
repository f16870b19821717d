"""Which aligned videos training and evaluation use: one place, so both read the same splits.

- ``synthetic``: long videos generated from the shipped real faces (model/data/synthetic.py).
  Train and validation videos use the TRAIN identities (different seeds); the test videos use
  the held-out TEST identities, never seen in training or threshold selection.
- ``casme2`` / ``sammlv``: the published layouts, k-fold by video (the paper's 5-fold protocol)
  or leave-one-subject-out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .data.preprocess import AlignedVideo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticSetConfig:
    """Sizes of the synthetic set. Video counts are per identity."""

    train_videos_per_identity: int = 2
    val_videos_per_identity: int = 1
    test_videos_per_identity: int = 2
    duration_s: float = 40.0
    seed: int = 0


def synthetic_split(
    split: str, cache_dir: Path, cfg: SyntheticSetConfig = SyntheticSetConfig()
) -> list[AlignedVideo]:
    """Generate (or read from the cache) and align one split of the synthetic set."""
    from .data import synthetic
    from .data.align import FaceAligner
    from .data.preprocess import preprocess_synthetic

    train_ids, test_ids = synthetic.train_test_identities()
    if split == "train":
        ids, n, offset = train_ids, cfg.train_videos_per_identity, 0
    elif split == "val":
        ids, n, offset = train_ids, cfg.val_videos_per_identity, 1000
    elif split == "test":
        ids, n, offset = test_ids, cfg.test_videos_per_identity, 2000
    else:
        raise ValueError(f"unknown split {split!r}: train, val or test")
    spec = synthetic.SyntheticSpec(duration_s=cfg.duration_s)
    videos = []
    with FaceAligner() as aligner:
        for i, identity in enumerate(ids):
            for k in range(n):
                seed = cfg.seed * 100_000 + offset + i * 10 + k
                videos.append(
                    preprocess_synthetic(
                        identity, spec, seed, aligner=aligner, cache_dir=Path(cache_dir)
                    )
                )
    log.info("synthetic %s: %d videos from %d identities", split, len(videos), len(ids))
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
