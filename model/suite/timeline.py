"""A whole clip's timeline: the expressions (labels) and what a webcam user does besides, all
labelled neutral: blinks, talking, glances away, slow head drift, jitter, leaning in and out,
and light changes that the camera's auto-exposure follows.

Distractors never overlap a micro-expression (an annotator could not label it), may overlap a
macro-expression (blinks, head motion) and talking keeps clear of every expression. A "calm"
clip has no talking: its distractors are blinks, head motion, light and the camera alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .motion import (
    ME,
    SUBTLE,
    Expression,
    Stratum,
    expression_strength,
    schedule_expressions,
)

CLIP_SECONDS = 35.0


@dataclass(frozen=True)
class Timeline:
    """Per-frame signals of one clip (frame i is at i / fps seconds)."""

    fps: int
    n_frames: int
    expressions: tuple[Expression, ...]
    blink: np.ndarray  # lid closure, 0..1
    jaw: np.ndarray  # talking: jaw opening, IOD
    pucker: np.ndarray  # talking: lip rounding, IOD
    yaw: np.ndarray  # degrees
    pitch: np.ndarray
    roll: np.ndarray
    dx: np.ndarray  # frame pixels from the home position
    dy: np.ndarray
    scale: np.ndarray  # relative face size
    exposure: np.ndarray  # brightness factor after auto-exposure
    talking: tuple[tuple[int, int], ...]  # inclusive frame ranges
    blinks: tuple[tuple[int, int], ...]

    def labels(self) -> list[tuple[int, int, int]]:
        """Inclusive (onset, offset, label) in source frames, in time order."""
        return sorted((e.onset, e.offset, e.label) for e in self.expressions)

    def strengths(self) -> np.ndarray:
        """(n_frames, n_expressions) expression strength (IOD), 0 outside each label."""
        if not self.expressions:
            return np.zeros((self.n_frames, 0))
        return np.stack([expression_strength(e, self.n_frames) for e in self.expressions], 1)


def _ou(n: int, dt: float, sigma: float, tau: float, rng: np.random.Generator) -> np.ndarray:
    """An Ornstein-Uhlenbeck path (stationary std ``sigma``, time constant ``tau`` s)."""
    a = np.exp(-dt / tau)
    noise = rng.standard_normal(n) * sigma * np.sqrt(1 - a * a)
    out = np.empty(n)
    x = rng.standard_normal() * sigma
    for i in range(n):
        x = a * x + noise[i]
        out[i] = x
    return out


def _busy(ranges: list[tuple[int, int]], n: int, pad: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    for a, b in ranges:
        mask[max(a - pad, 0) : min(b + pad + 1, n)] = True
    return mask


def _place(length: int, free: np.ndarray, rng: np.random.Generator) -> int | None:
    """A random start where ``length`` frames are all free, or None."""
    if length >= len(free):
        return None
    blocked = np.convolve((~free).astype(np.float64), np.ones(length), "valid")
    starts = np.flatnonzero(blocked < 0.5)
    return int(rng.choice(starts)) if len(starts) else None


def _talking(
    fps: int, n: int, free: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """2-4 bursts of speech: syllables at 3-5 Hz open the jaw and round the lips."""
    jaw, pucker = np.zeros(n), np.zeros(n)
    ranges = []
    for _ in range(int(rng.integers(2, 5))):
        length = int(rng.uniform(1.5, 4.0) * fps)
        s = _place(length, free, rng)
        if s is None:
            continue
        free[max(s - fps // 2, 0) : s + length + fps // 2] = False
        ranges.append((s, s + length - 1))
        t, rate = s, rng.uniform(3.0, 5.0)
        while t < s + length:
            syl = max(int(fps / rate * rng.uniform(0.7, 1.3)), 3)
            syl = min(syl, s + length - t)
            u = (np.arange(syl) + 0.5) / syl
            jaw[t : t + syl] = rng.uniform(0.02, 0.09) * np.sin(np.pi * u) ** 2
            pucker[t : t + syl] = rng.uniform(-0.01, 0.03) * np.sin(np.pi * u) ** 2
            t += syl
    return jaw, pucker, tuple(ranges)


def _blinks(
    fps: int, n: int, avoid: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """10-25 blinks a minute (Poisson), 0.12-0.3 s each, closing faster than they open."""
    blink = np.zeros(n)
    ranges = []
    rate = rng.uniform(10, 25) / 60.0  # blinks per second
    t = rng.exponential(1 / rate)
    while t * fps < n:
        length = max(int(rng.uniform(0.12, 0.3) * fps), 3)
        s = int(t * fps)
        if s + length < n and not avoid[s : s + length].any():
            close = max(int(length * 0.35), 1)
            shape = np.concatenate([np.linspace(0, 1, close + 1)[1:],
                                    np.linspace(1, 0, length - close + 1)[1:]])
            blink[s : s + length] = rng.uniform(0.85, 1.0) * np.sin(0.5 * np.pi * shape) ** 2
            ranges.append((s, s + length - 1))
        t += max(rng.exponential(1 / rate), 0.5)
    return blink, tuple(ranges)


def _pose(
    fps: int, n: int, avoid: np.ndarray, rng: np.random.Generator, max_deg: float
) -> list[np.ndarray]:
    """Yaw, pitch, roll (degrees): an offset, slow sways and 1-3 glances."""
    t = np.arange(n) / fps
    axes = []
    for amp in (max_deg, 0.7 * max_deg, 0.4 * max_deg):
        angle = np.full(n, rng.uniform(-0.4, 0.4) * amp)
        for _ in range(2):
            angle += rng.uniform(0.2, 0.5) * amp * np.sin(
                2 * np.pi * t / rng.uniform(3, 15) + rng.uniform(0, 2 * np.pi))
        axes.append(angle)
    for _ in range(int(rng.integers(1, 4))):  # glances: turn away quickly, hold, come back
        axis = int(rng.integers(0, 2))
        rise, hold = int(rng.uniform(0.3, 0.6) * fps), int(rng.uniform(0.5, 2.0) * fps)
        length = 2 * rise + hold
        s = _place(length, ~avoid, rng)
        if s is None:
            continue
        u = np.concatenate([np.linspace(0, 1, rise), np.ones(hold), np.linspace(1, 0, rise)])
        sign = 1 if rng.random() < 0.5 else -1
        axes[axis][s : s + length] += sign * rng.uniform(0.6, 1.2) * max_deg * np.sin(
            0.5 * np.pi * u) ** 2
    return axes


def _exposure(fps: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Light steps (a lamp, a cloud) that the auto-exposure catches up with, plus slow drift."""
    illum = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        if n <= 2 * fps:  # a clip too short for a light change
            break
        s = int(rng.integers(fps * 2, n))
        illum[s:] += np.log(rng.uniform(1.08, 1.25)) * (1 if rng.random() < 0.5 else -1)
    tau = rng.uniform(0.3, 0.8)
    a = np.exp(-1.0 / (fps * tau))
    ae = np.empty(n)
    level = illum[0]
    for i in range(n):
        level = a * level + (1 - a) * illum[i]
        ae[i] = level
    drift = _ou(n, 1.0 / fps, 0.015, 6.0, rng)
    return np.exp(illum - ae + drift)


def make_timeline(
    fps: int, n_frames: int, frame_width: int, rng: np.random.Generator, max_deg: float = 4.0,
    stratum: Stratum = SUBTLE, talking: bool = True,
) -> Timeline:
    """Everything that happens in one clip, drawn from ``rng``: expressions as far as
    ``stratum`` says, and bursts of talking unless ``talking`` is False. The defaults draw
    exactly what they drew before either choice existed (the same calls on ``rng``)."""
    per_clip = n_frames / fps / CLIP_SECONDS  # 3-5 of each class in a 35 s clip
    n_me, n_mae = (max(int(np.round(rng.choice([3, 4, 4, 5]) * per_clip)), 1) for _ in range(2))
    expressions = schedule_expressions(fps, n_frames, n_me, n_mae, rng, stratum)
    spans = [(e.onset, e.offset) for e in expressions]
    me_spans = [(e.onset, e.offset) for e in expressions if e.label == ME]
    free = ~_busy(spans, n_frames, int(0.4 * fps))
    if talking:
        jaw, pucker, talks = _talking(fps, n_frames, free, rng)
    else:
        jaw, pucker, talks = np.zeros(n_frames), np.zeros(n_frames), ()
    near_me = _busy(me_spans, n_frames, int(0.15 * fps))
    blink, blinks = _blinks(fps, n_frames, near_me, rng)
    yaw, pitch, roll = _pose(fps, n_frames, _busy(me_spans, n_frames, int(0.2 * fps)), rng,
                             max_deg)
    for a, b in talks:  # nodding along while talking
        pitch[a : b + 1] += 0.8 * np.convolve(jaw[a : b + 1] / 0.09, np.ones(5) / 5, "same")
    dt = 1.0 / fps
    jitter = rng.uniform(0.15, 0.6)
    kernel = np.array([0.25, 0.5, 0.25])
    dx = _ou(n_frames, dt, 0.015 * frame_width, 4.0, rng) + np.convolve(
        rng.standard_normal(n_frames) * jitter, kernel, "same")
    dy = _ou(n_frames, dt, 0.01 * frame_width, 5.0, rng) + np.convolve(
        rng.standard_normal(n_frames) * jitter, kernel, "same")
    scale = 1.0 + _ou(n_frames, dt, 0.02, 6.0, rng)
    return Timeline(fps, n_frames, tuple(expressions), blink, jaw, pucker, yaw, pitch, roll,
                    dx, dy, scale, _exposure(fps, n_frames, rng), talks, blinks)
