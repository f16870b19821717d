"""The schedule of a synthetic video: when each expression, blink, head move and light change
happens, drawn from a seed. Frames are rendered from it on demand (synthetic.py).

Expressions draw their temporal profile from the spec's families (profiles.py) and their AUs
from the spec's region mix: prototype combinations, or (``random``) 1-3 AUs with their own
weights and, for some, a left/right imbalance; a sided AU's track is keyed ``"<AU>|L"`` or
``"<AU>|R"`` (image left/right) and the renderer masks its field to that half of the face.
Webcam distractors (spec.distractors) are drawn by distractors.py from a separate random stream,
so a spec without them draws exactly what it always drew.
"""

from __future__ import annotations

import numpy as np

from .action_units import ACTION_UNITS, AU_COMBOS
from .distractors import add_distractors
from .profiles import PROFILES, draw_profile, expression_profile
from .spec import SyntheticSpec
from .timeline import (
    MAE,
    ME,
    NEUTRAL,
    ExpressionEvent,
    Plan,
    me_guard,
    place,
    smooth_noise,
    steps,
)

SIDES = ("L", "R")

__all__ = ["MAE", "ME", "NEUTRAL", "PROFILES", "ExpressionEvent", "Plan", "expression_profile",
           "plan_video"]


def _event_lengths(spec: SyntheticSpec, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(label, n_frames) for every event, in random order; ME <= 0.5 s and MaE >= 0.5 s hold."""
    fps = spec.fps
    max_me = int(np.floor(0.5 * fps + 1e-9))
    min_mae = int(np.ceil(0.5 * fps - 1e-9)) + 1
    events = []
    for _ in range(spec.n_me):
        n = round(rng.uniform(*spec.me_duration_s) * fps)
        events.append((ME, int(np.clip(n, 2, max_me))))
    for _ in range(spec.n_mae):
        n = round(rng.uniform(*spec.mae_duration_s) * fps)
        events.append((MAE, max(n, min_mae)))
    order = rng.permutation(len(events))
    return [events[i] for i in order]


def _random_mix(rng: np.random.Generator) -> list[tuple[str, float]]:
    """1-3 AUs drawn freely, each as (track key, weight): symmetric, or with probability 0.4 one
    side at full weight and the other at 0-70 % of it (two sided tracks)."""
    names = sorted(ACTION_UNITS)
    count = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    mix: list[tuple[str, float]] = []
    for i in rng.choice(len(names), size=count, replace=False):
        weight = float(rng.uniform(0.5, 1.0))
        if rng.random() < 0.4:
            strong = int(rng.integers(2))
            other = float(rng.uniform(0.0, 0.7))
            for k, side in enumerate(SIDES):
                mix.append((f"{names[int(i)]}|{side}", weight * (1.0 if k == strong else other)))
        else:
            mix.append((names[int(i)], weight))
    return mix


def _expressions(
    spec: SyntheticSpec, rng: np.random.Generator, n: int
) -> tuple[list[ExpressionEvent], dict[str, np.ndarray]]:
    """Place the events and draw their AUs, profiles and amplitudes (AU name -> (n,) px)."""
    min_gap = int(np.ceil(spec.min_gap_s * spec.fps))
    lengths = _event_lengths(spec, rng)
    starts = place([ln for _, ln in lengths], n, min_gap, rng)
    au_amp: dict[str, np.ndarray] = {}
    events: list[ExpressionEvent] = []
    me_combos: list[tuple[str, ...]] = []
    for (label, length), start in zip(lengths, starts, strict=True):
        mix: list[tuple[str, float]] | None = None
        if spec.region_mix == "random":
            mix = _random_mix(rng)
            combo = tuple(dict.fromkeys(key.split("|")[0] for key, _ in mix))
        elif label == MAE and me_combos and rng.random() < spec.reuse_me_combo_prob:
            combo = me_combos[int(rng.integers(len(me_combos)))]
        else:
            combo = AU_COMBOS[int(rng.integers(len(AU_COMBOS)))]
        family = spec.profiles[0]
        if len(spec.profiles) > 1:
            family = spec.profiles[int(rng.integers(len(spec.profiles)))]
        if label == ME:
            me_combos.append(combo)
            amp = rng.uniform(*spec.me_amplitude_px)
        else:
            amp = rng.uniform(*spec.mae_amplitude_px)
        prof = draw_profile(label == ME, length, family, rng)
        if mix is None:
            mix = [(au, float(rng.uniform(0.6, 1.0))) for au in combo]
        for key, weight in mix:
            track = au_amp.setdefault(key, np.zeros(n))
            track[start : start + length] += amp * weight * prof
        events.append(ExpressionEvent(start, start + length - 1, label, combo, float(amp)))
    return events, au_amp


def _blinks(
    spec: SyntheticSpec, rng: np.random.Generator, events: list[ExpressionEvent], n: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Blinks at Poisson-ish times, kept clear of MEs (a blink inside an ME would dominate it)."""
    fps = spec.fps
    blink = np.zeros(n)
    blink_frames: list[tuple[int, int]] = []
    me_busy = me_guard(events, n, int(0.1 * fps))
    t = rng.exponential(1.0 / spec.blink_rate_hz) if spec.blink_rate_hz > 0 else np.inf
    while t < spec.duration_s:
        length = max(round(rng.uniform(*spec.blink_duration_s) * fps), 2)
        start = int(t * fps)
        end = min(start + length, n)
        if end > start and not me_busy[start:end].any():
            closure = rng.uniform(0.8, 1.0) * expression_profile(length, 0.4, 0.1)
            blink[start:end] = np.maximum(blink[start:end], closure[: end - start])
            blink_frames.append((start, end - 1))
        t += rng.exponential(1.0 / spec.blink_rate_hz)
    return blink, blink_frames


def plan_video(spec: SyntheticSpec, seed: int) -> Plan:
    """Draw the whole schedule (events, blinks, pose, lighting, distractors) from ``seed``."""
    rng = np.random.default_rng([seed, 0])
    n, fps = spec.n_frames, spec.fps
    events, au_amp = _expressions(spec, rng, n)
    blink, blink_frames = _blinks(spec, rng, events, n)

    pose = np.zeros((n, 4))
    drifts = (spec.head_drift_px, spec.head_drift_px, spec.head_drift_deg, spec.head_drift_scale)
    for k, amount in enumerate(drifts):
        pose[:, k] = amount * smooth_noise(rng, n, fps)
    moves = (spec.n_head_moves, spec.head_move_px, spec.head_move_duration_s)
    pose[:, 0] += steps(rng, n, fps, *moves)
    pose[:, 1] += steps(rng, n, fps, moves[0], (moves[1][0] / 2, moves[1][1] / 2), moves[2])
    pose[:, 2] += steps(rng, n, fps, spec.n_head_moves, (1.0, 4.0), spec.head_move_duration_s)
    jitter = rng.normal(0.0, spec.jitter_px, size=(n, 2))
    pose[:, :2] += jitter

    gain = 1.0 + spec.lighting_drift * smooth_noise(rng, n, fps)
    gain += steps(rng, n, fps, spec.n_light_changes, spec.light_change, (0.1, 0.5))
    gain *= spec.light_gain
    gradient = np.stack(
        [0.5 * spec.lighting_drift * smooth_noise(rng, n, fps) for _ in range(2)], axis=1
    )
    gradient[:, 0] += spec.light_side
    noise_sigma = float(rng.uniform(*spec.noise_sigma))
    quality = None
    if spec.jpeg_quality is not None:
        quality = int(rng.integers(*spec.jpeg_quality, endpoint=True))
    plan = Plan(n, events, au_amp, blink, pose, gain, gradient, noise_sigma, quality,
                blink_frames)
    extra_rng = np.random.default_rng([seed, 2])
    if spec.au_spread != (1.0, 1.0):
        plan.spread = float(extra_rng.uniform(*spec.au_spread))
    if spec.distractors is not None:
        add_distractors(plan, spec, spec.distractors, extra_rng)
    return plan
