"""What happens in a suite clip, frame by frame: expressions (the labels), distractors labelled
neutral (blinks, talking, glances), head pose and drift. Everything is drawn from one seeded
generator, so a clip is a pure function of its seed.

Expressions: an ME lasts 0.15-0.5 s, an MaE 0.5-4 s; how far they move the face is the clip's
stratum (:data:`STRATA`): "subtle" MEs peak at 0.02-0.05 IOD (inter-ocular distances) and MaEs
at 0.06-0.16, "clear" MEs at 0.05-0.10 and MaEs at 0.08-0.20. An expression's strength is
``peak * profile(u)`` with u running from 0 at the frame before its onset to 1 at the frame
after its offset; every profile is 0 at both ends and positive inside, so the label
``(onset, offset)`` is exactly the frames where the expression moves the face (inclusive,
source frame indices; ME = 1, MaE = 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ME, MAE = 1, 2
ME_SECONDS = (0.15, 0.5)
MAE_SECONDS = (0.5, 4.0)


@dataclass(frozen=True)
class Stratum:
    """How far a clip's expressions move the face: peak vertex displacement ranges (IOD)."""

    name: str
    me_peak_iod: tuple[float, float]
    mae_peak_iod: tuple[float, float]


SUBTLE = Stratum("subtle", (0.02, 0.05), (0.06, 0.16))
"""Spontaneous expressions as the spotting datasets label them: an ME moves a landmark 1-3 mm
(a few pixels at an IOD of 100 px, within what FaceMesh jitters by through H.264 and noise),
an MaE up to a sixth of the IOD."""
CLEAR = Stratum("clear", (0.05, 0.10), (0.08, 0.20))
"""Clearly visible expressions, still brief: an ME is a full but quick action (3-6 mm: a brow
flash, a lip-corner twitch) from where the subtle stratum ends to twice that; an MaE is an
everyday full expression (a broad smile moves a lip corner 10-13 mm, a brow raise 5-10 mm)."""
STRATA = {s.name: s for s in (SUBTLE, CLEAR)}
LEAD_IN_S = 2.5
"""No expression in the first seconds: the person sits down in front of the camera."""
MIN_GAP_S = 1.2
"""Neutral time between two expressions."""

# Macro-expressions are prototypical mixes of templates (weights); a micro-expression is one
# or two templates of such a mix, often on one side.
MIXES: dict[str, tuple[tuple[str, float], ...]] = {
    "happy": (("corner_pull", 1.0), ("cheek_raise", 0.6), ("lid_tighten", 0.25)),
    "surprise": (("brow_raise_inner", 1.0), ("brow_raise_outer", 1.0), ("lid_raise", 0.5),
                 ("jaw_drop", 0.7)),
    "anger": (("brow_lower", 1.0), ("lid_tighten", 0.6), ("lip_press", 0.6)),
    "disgust": (("nose_wrinkle", 1.0), ("upper_lip_raise", 0.8), ("brow_lower", 0.3)),
    "sadness": (("brow_raise_inner", 1.0), ("corner_depress", 0.8), ("chin_raise", 0.4)),
    "contempt": (("corner_pull", 1.0), ("dimpler", 0.5)),
    "fear": (("brow_raise_inner", 1.0), ("brow_raise_outer", 0.6), ("lid_raise", 0.7),
             ("lip_stretch", 0.7)),
}
PROFILES = ("plateau", "attack_decay", "bump", "double")


@dataclass(frozen=True)
class Expression:
    label: int
    onset: int
    offset: int
    templates: tuple[tuple[str, float], ...]
    gains: tuple[float, float]  # image-left, image-right side
    peak_iod: float
    profile: str
    shape: tuple[float, ...]


def profile(kind: str, shape: tuple[float, ...], u: np.ndarray) -> np.ndarray:
    """Temporal profile on u in [0, 1]: 0 at both ends, positive inside, peak 1."""
    u = np.clip(u, 0.0, 1.0)
    if kind == "plateau":  # raised-cosine rise, hold, raised-cosine fall
        rise, fall = shape
        up = 0.5 - 0.5 * np.cos(np.pi * np.clip(u / rise, 0, 1))
        down = 0.5 - 0.5 * np.cos(np.pi * np.clip((1 - u) / fall, 0, 1))
        p = np.minimum(up, down)
    elif kind == "attack_decay":  # quick sine rise, power-law decay
        attack, power = shape
        p = np.where(u < attack, np.sin(0.5 * np.pi * u / attack) ** 2,
                     ((1 - u) / (1 - attack)) ** power)
    elif kind == "bump":  # a skewed sine lobe
        skew, sharp = shape
        p = np.sin(np.pi * u**skew) ** sharp
    elif kind == "double":  # two lobes, the second stronger; never back to 0 between them
        split, first = shape
        a = np.sin(np.pi * np.clip(u / split, 0, 1)) * first
        b = np.sin(np.pi * np.clip((u - split * 0.6) / (1 - split * 0.6), 0, 1))
        p = np.maximum(a, b)
    else:
        raise ValueError(f"unknown profile {kind!r}")
    p = np.where((u > 0) & (u < 1), np.maximum(p, 1e-3), 0.0)
    return p / max(float(p.max()), 1e-9)


def draw_shape(kind: str, rng: np.random.Generator) -> tuple[float, ...]:
    if kind == "plateau":
        return float(rng.uniform(0.15, 0.45)), float(rng.uniform(0.2, 0.5))
    if kind == "attack_decay":
        return float(rng.uniform(0.15, 0.4)), float(rng.uniform(0.8, 2.5))
    if kind == "bump":
        return float(rng.uniform(0.6, 1.6)), float(rng.uniform(0.7, 2.0))
    return float(rng.uniform(0.35, 0.55)), float(rng.uniform(0.4, 0.8))


def expression_strength(e: Expression, n_frames: int) -> np.ndarray:
    """(n_frames,) peak * profile: positive exactly on onset..offset."""
    i = np.arange(n_frames, dtype=np.float64)
    u = (i - (e.onset - 1)) / (e.offset - e.onset + 2)
    return e.peak_iod * profile(e.profile, e.shape, u)


def draw_expression(
    label: int, onset: int, n: int, rng: np.random.Generator, stratum: Stratum = SUBTLE
) -> Expression:
    """One expression of ``n`` frames from ``onset``: its templates, sides, peak (from the
    stratum's range) and profile."""
    mix = MIXES[str(rng.choice(sorted(MIXES)))]
    if label == ME:
        k = 1 if rng.random() < 0.6 else min(2, len(mix))
        picked = [mix[i] for i in sorted(rng.choice(len(mix), k, replace=False))]
        templates = tuple((t, 1.0 if j == 0 else w) for j, (t, w) in enumerate(picked))
        peak = rng.uniform(*stratum.me_peak_iod)
        kinds = PROFILES[:3]
    else:
        templates = tuple((t, w * float(rng.uniform(0.7, 1.2))) for t, w in mix)
        peak = rng.uniform(*stratum.mae_peak_iod)
        kinds = PROFILES
    if rng.random() < 0.35:  # one-sided
        strong = float(rng.uniform(0.9, 1.0))
        weak = float(rng.uniform(0.0, 0.3))
        gains = (strong, weak) if rng.random() < 0.5 else (weak, strong)
    else:
        gains = (float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.8, 1.0)))
    kind = str(rng.choice(kinds))
    return Expression(label, onset, onset + n - 1, templates, gains, float(peak), kind,
                      draw_shape(kind, rng))


def schedule_expressions(
    fps: int, n_frames: int, n_me: int, n_mae: int, rng: np.random.Generator,
    stratum: Stratum = SUBTLE,
) -> list[Expression]:
    """Non-overlapping expressions after the lead-in, at least MIN_GAP_S apart, in random order
    with random spacing (as many as fit, for clips too short to hold them all)."""
    labels = [ME] * n_me + [MAE] * n_mae
    rng.shuffle(labels)
    lengths = []
    for label in labels:
        lo, hi = ME_SECONDS if label == ME else MAE_SECONDS
        if label == ME:
            n = int(rng.integers(int(np.ceil(lo * fps)), int(hi * fps) + 1))
        else:
            n = int(np.round(np.exp(rng.uniform(np.log(lo), np.log(hi))) * fps))
            n = max(n, int(lo * fps) + 1)  # longer than an ME can be
        lengths.append(n)
    start, end = int(LEAD_IN_S * fps), n_frames - int(1.0 * fps)
    gap = int(MIN_GAP_S * fps)
    while labels and end - start - sum(lengths) - gap * (len(labels) - 1) < 0:
        labels, lengths = labels[:-1], lengths[:-1]  # a short clip holds fewer
    slack = end - start - sum(lengths) - gap * (len(labels) - 1)
    cuts = np.sort(rng.integers(0, slack + 1, len(labels)))
    out, taken = [], 0
    for label, n, cut in zip(labels, lengths, cuts, strict=True):
        out.append(draw_expression(label, start + int(cut) + taken, n, rng, stratum))
        taken += n + gap
    return out
