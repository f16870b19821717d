"""The pieces a synthetic video's schedule is made of: its events, its per-frame tracks, and
the small signal shapes (slow drift, smooth steps, block placement) the planners draw from.
plan.py (expressions, blinks, pose, light) and distractors.py (webcam distractors) both build
on this module; neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .profiles import smoothstep

NEUTRAL, ME, MAE = 0, 1, 2


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
    spread: float = 1.0  # scale of the AU fields' reach (Shepard sigma)
    extra: DistractorTracks | None = None  # webcam distractors (distractors.py)


@dataclass
class DistractorTracks:
    """Per-frame tracks of the webcam distractors (all labelled neutral)."""

    talk: np.ndarray  # (N,) jaw opening, px
    talk_round: np.ndarray  # (N,) lip rounding, px
    yaw_deg: np.ndarray  # (N,)
    pitch_deg: np.ndarray  # (N,)
    noise_sigma: np.ndarray  # (N,) replaces Plan.noise_sigma
    hold: np.ndarray  # (N,) int: the frame whose image frame i shows (i, or i - 1 when dropped)
    soft_focus: float
    blur_exposure: float  # shutter open this share of a frame interval (0: no motion blur)
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, first, last)


def place(
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


def smooth_noise(rng: np.random.Generator, n: int, fps: float, n_waves: int = 3) -> np.ndarray:
    """Unit-amplitude smooth drift (n,): a sum of slow sinusoids (0.03-0.3 Hz)."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(n_waves):
        f = rng.uniform(0.03, 0.3)
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out / n_waves


def steps(
    rng: np.random.Generator, n: int, fps: float, count: int, size: tuple[float, float],
    duration_s: tuple[float, float],
) -> np.ndarray:
    """Sum of ``count`` smooth random steps (n,) of magnitude in ``size`` and random sign."""
    out = np.zeros(n)
    for _ in range(count):
        start = rng.integers(0, max(n - 1, 1))
        length = max(int(rng.uniform(*duration_s) * fps), 1)
        ramp = smoothstep((np.arange(n) - start) / length)
        out += rng.choice([-1.0, 1.0]) * rng.uniform(*size) * ramp
    return out


def me_guard(events: Sequence[ExpressionEvent], n: int, guard_frames: int) -> np.ndarray:
    """(n,) bool: frames of an ME or within ``guard_frames`` of one."""
    busy = np.zeros(n, bool)
    for ev in events:
        if ev.label == ME:
            busy[max(ev.onset - guard_frames, 0) : ev.offset + guard_frames + 1] = True
    return busy


