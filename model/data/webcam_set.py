"""The ``v2`` synthetic training and validation videos: many identities, many motion families and
the distractors of a real webcam, so the network learns expressions rather than our generator.

What holds:

- Identities: the v2 training people (identities.V2_TRAIN_IDENTITIES) and their mirror images,
  plus morphs between pairs of them, and a jitter (variants.py) on about half of the videos;
  validation uses only V2_VAL_IDENTITIES and morphs among them. No video of either split shows
  a reserved person (identities.RESERVED_PEOPLE), and no validation person appears in training.
- Morphs pair only faces that morph cleanly (MORPHABLE: frontal, no glasses, nothing over the
  face), with 25-40 % of the second face, so no ghost of a second pair of eyes shows.
- Every video draws its own camera (30 or 60 FPS, framing, noise, JPEG quality, lens softness),
  neutral look, head motion, AU region mix and spread, and distractor mix (spec.Distractors);
  events take one of six temporal profiles. The test split's held-out motion family
  (``tps`` warps, ``linear`` profiles) is used by no v2 video.
- Everything is drawn from ``numpy.random.default_rng`` seeded by the set seed: the job list
  (and so every video id and byte) is a pure function of the config.
- The ``v3`` set is v2 plus half as many videos again, drawn the same way from their own seeds,
  whose MEs are as large as most MaEs (BRIEF_LARGE_ME_AMPLITUDE_PX): there only duration tells
  the classes apart.
- The ``v4`` set is v3 plus 24 training and 12 validation videos, drawn as v3's added ones from
  their own seeds, that reach the spotter through H.264 at a webcam's bitrate (codec.py): what a
  video call or a recorded clip delivers. No earlier video changes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .codec import CodecSpec
from .identities import V2_TRAIN_IDENTITIES, V2_VAL_IDENTITIES
from .spec import Distractors, SyntheticSpec, random_look
from .variants import jitter_name, morph_name

TRAIN_PROFILES = ("smooth", "asym", "cosine", "late", "plateau", "wobble")
MORPHABLE: tuple[str, ...] = (
    "door-man", "single-face", "f1-su", "f15-hao", "group-2", "group-3", "group-4", "group-5",
    "biden", "jesse", "luispedro",
)
SEED_OFFSETS = {"train": 5000, "val": 7000}
BRIEF_LARGE_SEED_OFFSETS = {"train": 6000, "val": 8000}
"""Seed offsets of v3's added videos (webcam_jobs(..., brief_large=True)): no id or seed of v2's."""
CODEC_SEED_OFFSETS = {"train": 9000, "val": 9500}
"""Seed offsets of v4's added videos (webcam_jobs(..., codec=CodecSpec())): no id or seed of
v2's or v3's."""
ME_AMPLITUDE_PX = (0.8, 3.0)
BRIEF_LARGE_ME_AMPLITUDE_PX = (0.8, 6.0)
"""Peak ME displacement (px of the 256 px identity image). In v2 an ME is smaller than almost
every MaE (2.5-9 px), so size alone can tell the classes apart; in v3's added videos MEs reach
most of the MaE range and only their brevity (at most 0.5 s) does. An ME is defined by its
duration: a brief brow flash or lip-corner twitch can move a face as far as a full expression."""


def webcam_framing(rng: np.random.Generator) -> dict:
    """SyntheticSpec fields of a webcam framing: the face filling a 256 px frame (35 %),
    480x360 (30 %), 640x480 (30 %) or 1280x720 (5 %) with the face at arm's length."""
    kind = int(rng.choice(4, p=[0.35, 0.3, 0.3, 0.05]))
    if kind == 0:
        return {}
    frame, faces = (((480, 360), (150, 300)), ((640, 480), (150, 320)),
                    ((1280, 720), (220, 420)))[kind - 1]
    return {"frame_size": frame, "face_size_px": int(rng.integers(*faces, endpoint=True))}


def _r(rng: np.random.Generator, low: float, high: float) -> float:
    return round(float(rng.uniform(low, high)), 3)


def webcam_spec(
    rng: np.random.Generator, duration_s: float, me_amplitude_px: tuple = ME_AMPLITUDE_PX
) -> SyntheticSpec:
    """One video's spec: its camera, look, head motion, events and distractor mix."""
    look = random_look(rng) if rng.random() < 0.6 else {}
    framing = webcam_framing(rng)
    noise_low = _r(rng, 0.3, 2.5)
    return SyntheticSpec(
        duration_s=duration_s,
        fps=30.0 if rng.random() < 0.3 else 60.0,
        n_me=int(rng.integers(4, 7)),
        n_mae=int(rng.integers(2, 4)),
        me_amplitude_px=me_amplitude_px,
        mae_amplitude_px=(2.5, 9.0),
        mae_duration_s=(0.6, 3.5),
        min_gap_s=0.8,
        blink_rate_hz=0.0,  # blinks come from the distractors, in four kinds
        head_drift_px=_r(rng, 1.0, 6.0),
        head_drift_deg=_r(rng, 0.5, 3.0),
        head_drift_scale=_r(rng, 0.005, 0.03),
        jitter_px=_r(rng, 0.1, 0.8),
        n_head_moves=int(rng.integers(0, 4)),
        lighting_drift=_r(rng, 0.02, 0.12),
        n_light_changes=int(rng.integers(0, 3)),
        noise_sigma=(noise_low, round(noise_low * 1.5, 3)),
        jpeg_quality=None if rng.random() < 0.1 else (35, 95),
        profiles=TRAIN_PROFILES,
        region_mix="random" if rng.random() < 0.6 else "combos",
        au_spread=(0.7, 1.5),
        distractors=Distractors(),
        **look,
        **framing,
    )


def identity_pool(split: str, seed: int) -> list[str]:
    """The identity names of a split before jitter: real people (and, for training, their
    mirror images), then morphs: two per morphable training person (with a random partner),
    every ordered pair of the validation people."""
    rng = np.random.default_rng([seed, 31, 0 if split == "train" else 1])
    real = list(V2_TRAIN_IDENTITIES if split == "train" else V2_VAL_IDENTITIES)
    pool = real + ([f"{p}~flip" for p in real] if split == "train" else [])
    morphable = [p for p in real if p in MORPHABLE]
    for a in morphable:
        partners = [b for b in morphable if b != a]
        if split == "train":
            partners = [partners[int(i)] for i in rng.choice(len(partners), 2, replace=False)]
        for b in partners:
            pool.append(morph_name(a, b, float(rng.uniform(0.25, 0.4))))
    return pool


def webcam_jobs(
    split: str, seed: int, n_videos: int, duration_s: float, brief_large: bool = False,
    codec: CodecSpec | None = None,
) -> list[tuple[str, SyntheticSpec, int]]:
    """(identity, spec, seed) of every v2 video of ``split`` (train or val); ``brief_large``:
    v3's added videos instead, drawn the same way from their own seeds, with MEs as large as
    BRIEF_LARGE_ME_AMPLITUDE_PX; ``codec``: v4's added videos, drawn as v3's from their own
    seeds, delivered through that codec."""
    if split not in SEED_OFFSETS:
        raise ValueError(f"the v2 set has train and val videos, not {split!r}")
    offsets = SEED_OFFSETS
    if codec is not None:
        offsets, brief_large = CODEC_SEED_OFFSETS, True
    elif brief_large:
        offsets = BRIEF_LARGE_SEED_OFFSETS
    offset = offsets[split]
    amplitude = BRIEF_LARGE_ME_AMPLITUDE_PX if brief_large else ME_AMPLITUDE_PX
    pool = identity_pool(split, seed)
    rng = np.random.default_rng([seed, 32, offset])
    order = rng.permutation(len(pool))
    jobs = []
    base = seed * 100_000 + offset
    for k in range(n_videos):
        identity = pool[int(order[k % len(pool)])]
        if rng.random() < 0.5:
            identity = jitter_name(identity, base + k)
        spec = webcam_spec(rng, duration_s, amplitude)
        if codec is not None:
            spec = replace(spec, codec=codec)
        jobs.append((identity, spec, base + k))
    return jobs
