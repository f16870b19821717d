"""The schedule of a synthetic video: when each expression, blink, head move and light change
happens, drawn from a seed. Frames are rendered from it on demand (synthetic.py).

Temporal *profile* families of an expression's amplitude (onset -> apex -> offset):

- ``smooth``: smoothstep rise, a hold at the apex, smoothstep fall (the original family).
- ``asym``: a quick rise and a long, decaying fall (quadratic ease-out).
- ``linear``: straight ramps with a hold. Held out of training together with the ``tps`` warp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .action_units import AU_COMBOS

if TYPE_CHECKING:
    from .synthetic import SyntheticSpec

NEUTRAL, ME, MAE = 0, 1, 2
PROFILES = ("smooth", "asym", "linear")


@dataclass(frozen=True)
class ExpressionEvent:
    """One labelled expression: inclusive frames [onset, offset], its AUs and peak amplitude."""

    onset: int
    offset: int
    label: int
    aus: tuple[str, ...]
    amplitude_px: float


@dataclass
class Plan:
    """Per-frame parameters of a whole video (cheap arrays; frames are rendered on demand)."""

    n_frames: int
    events: list[ExpressionEvent]
    au_amplitude: dict[str, np.ndarray]  # AU name -> (N,) px
    blink: np.ndarray  # (N,) closure 0..1
    pose: np.ndarray  # (N, 4) tx_px, ty_px, rot_deg, log_scale
    gain: np.ndarray  # (N,)
    gradient: np.ndarray  # (N, 2) horizontal / vertical relative gain slope
    noise_sigma: float
    jpeg_quality: int | None
    blink_frames: list[tuple[int, int]] = field(default_factory=list)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def expression_profile(
    n_frames: int, onset_frac: float, hold_frac: float, family: str = "smooth"
) -> np.ndarray:
    """Amplitude (n,) in (0, 1]: rise, hold at 1, fall; sampled at frame centres. ``family``
    shapes the ramps (module docstring)."""
    t = (np.arange(n_frames) + 0.5) / n_frames
    rise_end = onset_frac
    fall_start = min(onset_frac + hold_frac, 1.0)
    up = np.clip(t / max(rise_end, 1e-6), 0.0, 1.0)
    down = np.clip((1.0 - t) / max(1.0 - fall_start, 1e-6), 0.0, 1.0)
    if family == "smooth":
        return np.minimum(_smoothstep(up), _smoothstep(down))
    if family == "asym":
        return np.minimum(_smoothstep(up), 1.0 - (1.0 - down) ** 2)
    if family == "linear":
        return np.minimum(up, down)
    raise ValueError(f"unknown profile family {family!r}; choose one of {PROFILES}")


def _profile(label: int, length: int, family: str, rng: np.random.Generator) -> np.ndarray:
    """One expression's amplitude profile. The default family draws exactly what the generator
    drew before families existed, so existing videos keep their bytes."""
    if family == "asym":
        return expression_profile(length, rng.uniform(0.08, 0.2), rng.uniform(0.0, 0.2), family)
    if label == ME:
        return expression_profile(length, rng.uniform(0.3, 0.5), rng.uniform(0.0, 0.2), family)
    return expression_profile(length, rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.5), family)


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


def _place(
    lengths: Sequence[int], n_frames: int, min_gap: int, rng: np.random.Generator
) -> list[int]:
    """Start frames for consecutive blocks with >= min_gap free frames around each block."""
    slack = n_frames - sum(lengths) - min_gap * (len(lengths) + 1)
    if slack < 0:
        raise ValueError(
            f"{len(lengths)} events of {sum(lengths)} frames with {min_gap}-frame gaps do not fit "
            f"in {n_frames} frames: lengthen duration_s or reduce n_me/n_mae"
        )
    shares = rng.dirichlet(np.ones(len(lengths) + 1)) * slack
    extra = np.floor(shares).astype(int)
    starts, pos = [], 0
    for length, ext in zip(lengths, extra[:-1], strict=True):
        pos += min_gap + int(ext)
        starts.append(pos)
        pos += length
    return starts


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, n_waves: int = 3) -> np.ndarray:
    """Unit-amplitude smooth drift (n,): a sum of slow sinusoids (0.03-0.3 Hz)."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(n_waves):
        f = rng.uniform(0.03, 0.3)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out / n_waves


def _steps(
    rng: np.random.Generator, n: int, fps: float, count: int, size: tuple[float, float],
    duration_s: tuple[float, float],
) -> np.ndarray:
    """Sum of ``count`` smooth random steps (n,) of magnitude in ``size`` and random sign."""
    out = np.zeros(n)
    for _ in range(count):
        start = rng.integers(0, max(n - 1, 1))
        length = max(int(rng.uniform(*duration_s) * fps), 1)
        ramp = _smoothstep((np.arange(n) - start) / length)
        out += rng.choice([-1.0, 1.0]) * rng.uniform(*size) * ramp
    return out


def plan_video(spec: SyntheticSpec, seed: int) -> Plan:
    """Draw the whole schedule (events, blinks, pose, lighting) from ``seed``."""
    rng = np.random.default_rng([seed, 0])
    n, fps = spec.n_frames, spec.fps
    min_gap = int(np.ceil(spec.min_gap_s * fps))

    lengths = _event_lengths(spec, rng)
    starts = _place([ln for _, ln in lengths], n, min_gap, rng)
    au_amp: dict[str, np.ndarray] = {}
    events: list[ExpressionEvent] = []
    me_combos: list[tuple[str, ...]] = []
    for (label, length), start in zip(lengths, starts, strict=True):
        if label == MAE and me_combos and rng.random() < spec.reuse_me_combo_prob:
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
        prof = _profile(label, length, family, rng)
        for au in combo:
            track = au_amp.setdefault(au, np.zeros(n))
            track[start : start + length] += amp * rng.uniform(0.6, 1.0) * prof
        events.append(ExpressionEvent(start, start + length - 1, label, combo, float(amp)))

    # Blinks: Poisson-ish times, kept clear of MEs (a blink inside an ME would dominate it).
    blink = np.zeros(n)
    blink_frames: list[tuple[int, int]] = []
    me_busy = np.zeros(n, bool)
    guard = int(0.1 * fps)
    for ev in events:
        if ev.label == ME:
            me_busy[max(ev.onset - guard, 0) : ev.offset + guard + 1] = True
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

    pose = np.zeros((n, 4))
    drifts = (spec.head_drift_px, spec.head_drift_px, spec.head_drift_deg, spec.head_drift_scale)
    for k, amount in enumerate(drifts):
        pose[:, k] = amount * _smooth_noise(rng, n, fps)
    moves = (spec.n_head_moves, spec.head_move_px, spec.head_move_duration_s)
    pose[:, 0] += _steps(rng, n, fps, *moves)
    pose[:, 1] += _steps(rng, n, fps, moves[0], (moves[1][0] / 2, moves[1][1] / 2), moves[2])
    pose[:, 2] += _steps(rng, n, fps, spec.n_head_moves, (1.0, 4.0), spec.head_move_duration_s)
    jitter = rng.normal(0.0, spec.jitter_px, size=(n, 2))
    pose[:, :2] += jitter

    gain = 1.0 + spec.lighting_drift * _smooth_noise(rng, n, fps)
    gain += _steps(rng, n, fps, spec.n_light_changes, spec.light_change, (0.1, 0.5))
    gain *= spec.light_gain
    gradient = np.stack(
        [0.5 * spec.lighting_drift * _smooth_noise(rng, n, fps) for _ in range(2)], axis=1
    )
    gradient[:, 0] += spec.light_side
    noise_sigma = float(rng.uniform(*spec.noise_sigma))
    quality = None
    if spec.jpeg_quality is not None:
        quality = int(rng.integers(*spec.jpeg_quality, endpoint=True))
    return Plan(n, events, au_amp, blink, pose, gain, gradient, noise_sigma, quality, blink_frames)

