"""Webcam distractors of a synthetic video, drawn from a seed: everything a real camera shows
besides expressions, all labelled neutral (spec.Distractors says what each one is).

What holds:

- Drawn from the plan's separate random stream, after the expressions: a spec without
  distractors never reaches this module and keeps its bytes.
- Blinks, talking, head turns, twitches and noise bursts stay ``guard_s`` away from every ME
  (they may overlap a MaE, as they do in life); slow drift, flicker and exposure steps run
  everywhere. Every placed distractor is recorded in ``DistractorTracks.spans``.
- A dropped frame shows the previous frame's image again, never across a label change, so a
  labelled frame always shows its own expression state.
"""

from __future__ import annotations

import numpy as np

from .profiles import expression_profile, smoothstep
from .spec import Distractors, SyntheticSpec
from .timeline import DistractorTracks, Plan, me_guard, smooth_noise

BLINK_KINDS = ("single", "double", "partial", "slow")
MAX_YAW_DEG = 20.0
MAX_PITCH_DEG = 14.0


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _count(rng: np.random.Generator, per_min: tuple[float, float], minutes: float) -> int:
    return int(rng.poisson(_uniform(rng, per_min) * minutes))


def _free_start(
    rng: np.random.Generator, busy: np.ndarray, length: int, tries: int = 20
) -> int | None:
    """A start frame whose ``length`` frames are all free of ``busy``, or None."""
    n = len(busy)
    if length >= n:
        return None
    for _ in range(tries):
        start = int(rng.integers(0, n - length))
        if not busy[start : start + length].any():
            return start
    return None


def _bump(length: int, hold_frac: float) -> np.ndarray:
    """Out-and-back shape (length,) in [0, 1]: smooth rise, hold, smooth fall."""
    return expression_profile(length, (1.0 - hold_frac) / 2, hold_frac)


def _blinks(
    plan: Plan, d: Distractors, fps: float, busy: np.ndarray, rng: np.random.Generator,
    spans: list[tuple[str, int, int]],
) -> None:
    """Single, double, partial and slow blinks at Poisson times, merged into ``plan.blink``."""
    n = plan.n_frames
    rate = _uniform(rng, d.blink_rate_hz)
    weights = np.asarray(d.blink_kinds, float) / sum(d.blink_kinds)
    t = rng.exponential(1.0 / rate) if rate > 0 else np.inf
    while t * fps < n:
        kind = BLINK_KINDS[int(rng.choice(4, p=weights))]
        if kind == "slow":
            pieces = [(rng.uniform(0.35, 0.8), rng.uniform(0.85, 1.0), rng.uniform(0.2, 0.4))]
        elif kind == "partial":
            pieces = [(rng.uniform(0.1, 0.25), rng.uniform(0.3, 0.6), 0.1)]
        else:
            pieces = [(rng.uniform(0.1, 0.3), rng.uniform(0.8, 1.0), 0.1)]
            if kind == "double":
                pieces.append((rng.uniform(0.1, 0.25), rng.uniform(0.7, 1.0), 0.1))
        start = int(t * fps)
        shapes = []
        for k, (dur_s, closure, hold) in enumerate(pieces):
            gap = int(rng.uniform(0.08, 0.25) * fps) if k else 0
            shapes.append(np.zeros(gap))
            length = max(round(dur_s * fps), 2)
            shapes.append(closure * expression_profile(length, (1 - hold) / 2, hold))
        shape = np.concatenate(shapes)
        end = min(start + len(shape), n)
        if end > start and not busy[start:end].any():
            plan.blink[start:end] = np.maximum(plan.blink[start:end], shape[: end - start])
            plan.blink_frames.append((start, end - 1))
            spans.append((f"blink-{kind}", start, end - 1))
        t += rng.exponential(1.0 / rate)


def _talking(
    n: int, d: Distractors, fps: float, minutes: float, busy: np.ndarray,
    rng: np.random.Generator, spans: list[tuple[str, int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Jaw opening and lip rounding tracks (px): syllables at 2-6 Hz for seconds at a time."""
    jaw, rounding = np.zeros(n), np.zeros(n)
    for _ in range(_count(rng, d.talks_per_min, minutes)):
        length = round(_uniform(rng, d.talk_duration_s) * fps)
        start = _free_start(rng, busy, length)
        if start is None:
            continue
        t = np.arange(length) / fps
        rate = _uniform(rng, d.talk_hz) * (1.0 + 0.25 * smooth_noise(rng, length, fps))
        phase = np.cumsum(rate) / fps + rng.uniform(0.0, 1.0)
        ramp = max(int(0.15 * fps), 1)
        env = np.minimum(smoothstep(np.arange(length) / ramp),
                         smoothstep((length - 1 - np.arange(length)) / ramp))
        loud = 0.65 + 0.35 * smooth_noise(rng, length, fps)
        amp = _uniform(rng, d.talk_jaw_px)
        jaw[start : start + length] = amp * env * loud * np.abs(np.sin(np.pi * phase)) ** 1.5
        round_hz = rng.uniform(0.5, 1.5)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * round_hz * t + rng.uniform(0, 2 * np.pi))
        rounding[start : start + length] = amp * rng.uniform(0.3, 0.8) * env * wave
        busy[start : start + length] = True  # sentences do not overlap
        spans.append(("talk", start, start + length - 1))
    return jaw, rounding


def _rotation(
    n: int, d: Distractors, fps: float, minutes: float, busy: np.ndarray,
    rng: np.random.Generator, spans: list[tuple[str, int, int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (degrees): slow drift everywhere plus turns away and back."""
    yaw = _uniform(rng, d.yaw_drift_deg) * smooth_noise(rng, n, fps)
    pitch = _uniform(rng, d.pitch_drift_deg) * smooth_noise(rng, n, fps)
    for _ in range(_count(rng, d.turns_per_min, minutes)):
        ramp_s = _uniform(rng, d.turn_duration_s)
        hold_s = rng.uniform(0.2, 3.0)
        length = round((2 * ramp_s + hold_s) * fps)
        start = _free_start(rng, busy, length)
        if start is None:
            continue
        angle = _uniform(rng, d.turn_deg) * rng.choice([-1.0, 1.0])
        shape = _bump(length, hold_s / (2 * ramp_s + hold_s))
        axis = yaw if rng.random() < 0.7 else pitch
        axis[start : start + length] += angle * shape
        spans.append(("turn", start, start + length - 1))
    return np.clip(yaw, -MAX_YAW_DEG, MAX_YAW_DEG), np.clip(pitch, -MAX_PITCH_DEG, MAX_PITCH_DEG)


def _twitches(
    plan: Plan, yaw: np.ndarray, d: Distractors, fps: float, minutes: float, busy: np.ndarray,
    rng: np.random.Generator, spans: list[tuple[str, int, int]],
) -> None:
    """Quick rigid head jerks out and back (0.12-0.5 s: the time scale of an ME)."""
    for _ in range(_count(rng, d.twitches_per_min, minutes)):
        length = max(round(_uniform(rng, d.twitch_duration_s) * fps), 3)
        start = _free_start(rng, busy, length)
        if start is None:
            continue
        shape = _bump(length, rng.uniform(0.0, 0.3))
        angle = rng.uniform(0, 2 * np.pi)
        size = _uniform(rng, d.twitch_px)
        sl = slice(start, start + length)
        plan.pose[sl, 0] += size * np.cos(angle) * shape
        plan.pose[sl, 1] += size * np.sin(angle) * shape
        plan.pose[sl, 2] += rng.uniform(-1.5, 1.5) * shape
        yaw[sl] += rng.uniform(-2.0, 2.0) * shape
        spans.append(("twitch", start, start + length - 1))


def _exposure(
    n: int, d: Distractors, fps: float, minutes: float, rng: np.random.Generator,
    spans: list[tuple[str, int, int]],
) -> np.ndarray:
    """Gain multiplier (n,): mains flicker beating with the frame rate, and auto-exposure steps
    (a sudden change of light, then the camera settling back with a small overshoot)."""
    t = np.arange(n) / fps
    amp, hz = _uniform(rng, d.flicker), _uniform(rng, d.flicker_hz)
    gain = 1.0 + amp * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
    for _ in range(_count(rng, d.exposure_steps_per_min, minutes)):
        start = int(rng.integers(0, n))
        settle = max(round(_uniform(rng, d.exposure_settle_s) * fps), 2)
        size = _uniform(rng, d.exposure_step) * rng.choice([-1.0, 1.0])
        u = np.clip((np.arange(n - start)) / settle, 0.0, 1.0)
        gain[start:] *= np.exp(size * ((1.0 - u) ** 2 - 0.15 * np.sin(np.pi * u)))
        spans.append(("exposure", start, min(start + settle, n) - 1))
    return gain


def _noise(
    plan: Plan, d: Distractors, fps: float, minutes: float, busy: np.ndarray,
    rng: np.random.Generator, spans: list[tuple[str, int, int]],
) -> np.ndarray:
    """Per-frame sensor noise sigma: the video's base level plus short bursts."""
    sigma = np.full(plan.n_frames, plan.noise_sigma)
    for _ in range(_count(rng, d.noise_bursts_per_min, minutes)):
        length = max(round(_uniform(rng, d.noise_burst_s) * fps), 2)
        start = _free_start(rng, busy, length)
        if start is None:
            continue
        peak = _uniform(rng, d.noise_burst_sigma)
        sl = slice(start, start + length)
        sigma[sl] = np.maximum(sigma[sl], peak * _bump(length, 0.5))
        spans.append(("noise", start, start + length - 1))
    return sigma


def _drops(plan: Plan, d: Distractors, rng: np.random.Generator) -> np.ndarray:
    """hold (n,): the frame whose image each frame shows; a dropped frame repeats the one
    before (a camera that missed a frame), never across a label change."""
    n = plan.n_frames
    labels = np.zeros(n, np.int64)
    for ev in plan.events:
        labels[ev.onset : ev.offset + 1] = ev.label
    hold = np.arange(n)
    dropped = rng.random(n) < _uniform(rng, d.frame_drop)
    for i in np.flatnonzero(dropped[1:]) + 1:
        if labels[hold[i - 1]] == labels[i]:
            hold[i] = hold[i - 1]
    return hold


def add_distractors(
    plan: Plan, spec: SyntheticSpec, d: Distractors, rng: np.random.Generator
) -> None:
    """Draw the webcam distractors into ``plan`` (blinks, pose, gain) and ``plan.extra``."""
    n, fps = plan.n_frames, spec.fps
    minutes = spec.duration_s / 60.0
    busy = me_guard(plan.events, n, round(d.guard_s * fps))
    spans: list[tuple[str, int, int]] = []
    _blinks(plan, d, fps, busy, rng, spans)
    jaw, rounding = _talking(n, d, fps, minutes, busy.copy(), rng, spans)
    yaw, pitch = _rotation(n, d, fps, minutes, busy, rng, spans)
    twitch_busy = busy | (jaw > 0)
    _twitches(plan, yaw, d, fps, minutes, twitch_busy, rng, spans)
    plan.gain = plan.gain * _exposure(n, d, fps, minutes, rng, spans)
    sigma = _noise(plan, d, fps, minutes, busy, rng, spans)
    hold = _drops(plan, d, rng)
    exposure = float(rng.uniform(0.3, 1.0)) if d.motion_blur else 0.0
    plan.extra = DistractorTracks(
        talk=jaw, talk_round=rounding, yaw_deg=yaw, pitch_deg=pitch, noise_sigma=sigma,
        hold=hold, soft_focus=_uniform(rng, d.soft_focus), blur_exposure=exposure,
        spans=sorted(spans, key=lambda s: s[1]),
    )
