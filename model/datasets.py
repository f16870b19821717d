"""Which aligned videos training and evaluation use: one place, so both read the same splits.

- ``synthetic``: long videos generated from the shipped real faces (model/data/synthetic.py), in
  two sets (``SyntheticSetConfig.preset``). ``v1``: train and validation videos use the TRAIN
  identities (different seeds; some with a random neutral look). ``v2`` (model/data/webcam_set.py):
  dozens of identities (more real faces, mirror images, morphs, jitters), six temporal
  profiles, random AU region mixes and the distractors of a real webcam; its validation videos
  show only people no training video shows. Both sets share one test split: the held-out TEST
  identities, never seen in training or threshold selection, the same videos byte for byte.
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
    """Sizes and motion families of the synthetic set. Video counts are per identity.

    - train: every training identity and its mirror image (``~flip``), each with plain videos
      (the identity image's own look) and *look* videos (a random neutral look,
      ``synthetic.random_look``, and a random camera framing, ``synthetic.random_framing``).
      Without varied looks the model learns the identity images' own look: a changed look lifted
      its resting p_expr median from 0.04 to as much as 0.92 (docs/CALIBRATION.md).
    - val: the training identities (not mirrored), plain and look videos, new seeds.
    - test: the held-out identities, in two parts. *plain*: the training motion families (the
      same videos as every earlier test split). *holdout*: a motion family no training video
      has (``holdout_warp`` + ``holdout_profiles``), with random looks and framings.
    """

    train_videos_per_identity: int = 1
    val_videos_per_identity: int = 1
    test_videos_per_identity: int = 2
    duration_s: float = 40.0
    seed: int = 0
    train_look_videos_per_identity: int = 1
    val_look_videos_per_identity: int = 1
    test_holdout_videos_per_identity: int = 2
    flip_train_identities: bool = True
    train_profiles: tuple[str, ...] = ("smooth", "asym")
    holdout_warp: str = "tps"
    holdout_profiles: tuple[str, ...] = ("linear",)
    version: str = "v1"
    """``v1`` (the fields above), ``v2`` (train and val from webcam_set.py, sized below) or ``v3``
    (v2's videos and half as many again whose MEs reach into the MaE amplitude range:
    webcam_set.BRIEF_LARGE_ME_AMPLITUDE_PX) or ``v4`` (v3's videos and ``v4_codec_*_videos``
    more, drawn as v3's added ones, delivered through H.264 at a webcam's bitrate: codec.py)."""
    v2_train_videos: int = 96
    v2_val_videos: int = 24
    v2_duration_s: float = 30.0
    v4_codec_train_videos: int = 24
    v4_codec_val_videos: int = 12
    """v4's added videos (through H.264): rendering and aligning one of 640x480 or more costs
    about 2.5 minutes on a core, so training gets a quarter of v2's count, validation half."""

    @classmethod
    def preset(cls, name: str, seed: int = 0) -> SyntheticSetConfig:
        """The named set (SYNTHETIC_SETS) with the given seed."""
        if name not in SYNTHETIC_SETS:
            raise ValueError(f"unknown synthetic set {name!r}; choose one of {SYNTHETIC_SETS}")
        return cls(seed=seed, version=name)


SYNTHETIC_SETS = ("v1", "v2", "v3", "v4")


def synthetic_jobs(
    split: str, cfg: SyntheticSetConfig = SyntheticSetConfig()
) -> list[tuple[str, SyntheticSpec, int]]:
    """(identity, spec, seed) of every video of one split (see :class:`SyntheticSetConfig`).
    The plain test videos keep the seeds and specs they always had, so their caches and every
    earlier score on them stay comparable."""
    from .data import synthetic
    from .data.identities import FLIP_SUFFIX, train_test_identities

    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}: train, val or test")
    if cfg.version not in SYNTHETIC_SETS:
        raise ValueError(f"unknown synthetic set {cfg.version!r}; choose one of {SYNTHETIC_SETS}")
    if cfg.version in ("v2", "v3", "v4") and split != "test":
        from .data.codec import CodecSpec
        from .data.webcam_set import webcam_jobs

        n = cfg.v2_train_videos if split == "train" else cfg.v2_val_videos
        jobs = webcam_jobs(split, cfg.seed, n, cfg.v2_duration_s)
        if cfg.version in ("v3", "v4"):
            jobs += webcam_jobs(split, cfg.seed, n // 2, cfg.v2_duration_s, brief_large=True)
        if cfg.version == "v4":
            coded = cfg.v4_codec_train_videos if split == "train" else cfg.v4_codec_val_videos
            jobs += webcam_jobs(split, cfg.seed, coded, cfg.v2_duration_s, codec=CodecSpec())
        return jobs
    train_ids, test_ids = train_test_identities()
    base = cfg.seed * 100_000
    jobs: list[tuple[str, SyntheticSpec, int]] = []

    def varied(rng: np.random.Generator, **fields: object) -> SyntheticSpec:
        look = synthetic.random_look(rng) | synthetic.random_framing(rng)
        return synthetic.SyntheticSpec(duration_s=cfg.duration_s, **look, **fields)

    if split in ("train", "val"):
        ids = train_ids
        n, n_look, offset = cfg.val_videos_per_identity, cfg.val_look_videos_per_identity, 1000
        if split == "train":
            if cfg.flip_train_identities:
                ids = ids + [name + FLIP_SUFFIX for name in ids]
            n, n_look, offset = cfg.train_videos_per_identity, cfg.train_look_videos_per_identity, 0
        plain = synthetic.SyntheticSpec(duration_s=cfg.duration_s, profiles=cfg.train_profiles)
        for i, identity in enumerate(ids):
            for k in range(n):
                jobs.append((identity, plain, base + offset + i * 10 + k))
            for k in range(n_look):
                rng = np.random.default_rng([cfg.seed, offset, i, k])
                spec = varied(rng, profiles=cfg.train_profiles)
                jobs.append((identity, spec, base + offset + 500 + i * 10 + k))
        return jobs
    plain = synthetic.SyntheticSpec(duration_s=cfg.duration_s)
    for i, identity in enumerate(test_ids):
        for k in range(cfg.test_videos_per_identity):
            jobs.append((identity, plain, base + 2000 + i * 10 + k))
        for k in range(cfg.test_holdout_videos_per_identity):
            rng = np.random.default_rng([cfg.seed, 2000, i, k])
            spec = varied(rng, warp=cfg.holdout_warp, profiles=cfg.holdout_profiles)
            jobs.append((identity, spec, base + 2500 + i * 10 + k))
    return jobs


def motion_family(spec: SyntheticSpec) -> str:
    """A video's motion family as a short name: ``warp/profile+profile``."""
    return f"{spec.warp}/{'+'.join(spec.profiles)}"


def synthetic_families(split: str, cfg: SyntheticSetConfig = SyntheticSetConfig()) -> dict:
    """video id -> motion family, for every video of a split (to report held-out motion apart)."""
    from .data.synthetic import synthetic_video_id

    return {
        synthetic_video_id(identity, spec, seed): motion_family(spec)
        for identity, spec, seed in synthetic_jobs(split, cfg)
    }


def _preprocess_job(job: tuple[str, SyntheticSpec, int], cache_dir: Path) -> AlignedVideo:
    from .data.preprocess import preprocess_synthetic

    identity, spec, seed = job
    return preprocess_synthetic(identity, spec, seed, cache_dir=cache_dir)


def cache_synthetic_split(
    split: str,
    cache_dir: Path,
    cfg: SyntheticSetConfig = SyntheticSetConfig(),
    workers: int = 1,
) -> list[tuple[str, SyntheticSpec, int]]:
    """Render and align the videos of one split that are not cached yet (~30 s per 40 s video
    on one core; ``workers`` processes share them). Returns the split's jobs."""
    from functools import partial

    from .data.preprocess import cached_synthetic

    jobs = synthetic_jobs(split, cfg)
    todo = [job for job in jobs if cached_synthetic(*job, cache_dir=cache_dir) is None]
    run = partial(_preprocess_job, cache_dir=cache_dir)
    desc = f"synthetic {cfg.version} {split}"
    if workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for _ in tqdm(pool.map(run, todo), total=len(todo), desc=desc, unit="video"):
                pass
    else:
        for job in tqdm(todo, desc=desc, unit="video", disable=len(todo) < 2):
            run(job)
    return jobs


def synthetic_split(
    split: str,
    cache_dir: Path,
    cfg: SyntheticSetConfig = SyntheticSetConfig(),
    workers: int = 1,
) -> list[AlignedVideo]:
    """Generate (or read from the cache) and align one split of the synthetic set, and load
    it (all crops in memory: ~90 MB per 40 s video at 60 Hz)."""
    jobs = cache_synthetic_split(split, cache_dir, cfg, workers)
    videos = [_preprocess_job(job, cache_dir) for job in jobs]
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
