"""Temporal profile families of an expression's amplitude (onset -> apex -> offset), sampled at
frame centres: positive on every frame of the event and at most 1.1. The labels rely on it: an
expression interval has non-zero amplitude on each of its frames, and none outside.

- ``smooth``: smoothstep rise, a hold at the apex, smoothstep fall (the original family).
- ``asym``: a quick rise and a long, decaying fall (quadratic ease-out).
- ``linear``: straight ramps with a hold. Held out of training together with the ``tps`` warp.
- ``cosine``: raised-cosine ramps (a softer start and end than smoothstep's).
- ``late``: a slow rise and a quick fall (the mirror image of ``asym``).
- ``plateau``: short steep ramps and a long hold at the apex.
- ``wobble``: ``smooth`` with a slow ripple of +-10 % on top (a tremor or an unsteady hold).
"""

from __future__ import annotations

import numpy as np

PROFILES = ("smooth", "asym", "linear", "cosine", "late", "plateau", "wobble")


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def expression_profile(
    n_frames: int, onset_frac: float, hold_frac: float, family: str = "smooth",
    ripple_phase: float = 0.0,
) -> np.ndarray:
    """Amplitude (n,) in (0, 1]: rise, hold at 1, fall; sampled at frame centres. ``family``
    shapes the ramps (module docstring); ``ripple_phase`` places the ripple of ``wobble``."""
    t = (np.arange(n_frames) + 0.5) / n_frames
    rise_end = onset_frac
    fall_start = min(onset_frac + hold_frac, 1.0)
    up = np.clip(t / max(rise_end, 1e-6), 0.0, 1.0)
    down = np.clip((1.0 - t) / max(1.0 - fall_start, 1e-6), 0.0, 1.0)
    if family in ("smooth", "plateau"):
        return np.minimum(smoothstep(up), smoothstep(down))
    if family == "asym":
        return np.minimum(smoothstep(up), 1.0 - (1.0 - down) ** 2)
    if family == "linear":
        return np.minimum(up, down)
    if family == "cosine":
        return np.minimum(0.5 - 0.5 * np.cos(np.pi * up), 0.5 - 0.5 * np.cos(np.pi * down))
    if family == "late":
        return np.minimum(1.0 - (1.0 - up) ** 2, smoothstep(down))
    if family == "wobble":
        base = np.minimum(smoothstep(up), smoothstep(down))
        return base * (1.0 + 0.1 * np.sin(2 * np.pi * (2.0 * t + ripple_phase)))
    raise ValueError(f"unknown profile family {family!r}; choose one of {PROFILES}")


def draw_profile(
    is_me: bool, length: int, family: str, rng: np.random.Generator
) -> np.ndarray:
    """One expression's amplitude profile with its ramp and hold fractions drawn from ``rng``.
    The original families (smooth, asym, linear) draw exactly what they always drew, so
    existing videos keep their bytes."""
    if family == "asym":
        return expression_profile(length, rng.uniform(0.08, 0.2), rng.uniform(0.0, 0.2), family)
    if family == "late":
        return expression_profile(length, rng.uniform(0.55, 0.8), rng.uniform(0.0, 0.15), family)
    if family == "plateau":
        return expression_profile(length, rng.uniform(0.08, 0.2), rng.uniform(0.4, 0.7), family)
    if family == "wobble":
        onset, hold = rng.uniform(0.2, 0.45), rng.uniform(0.1, 0.4)
        return expression_profile(length, onset, hold, family, float(rng.uniform(0.0, 1.0)))
    if is_me:
        return expression_profile(length, rng.uniform(0.3, 0.5), rng.uniform(0.0, 0.2), family)
    return expression_profile(length, rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.5), family)
