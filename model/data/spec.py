"""What a synthetic video contains: :class:`SyntheticSpec` (events, motion family, camera) and
:class:`Distractors` (what a real webcam adds, all labelled neutral), and their stable digest.

The spec is pure data: plan.py draws a schedule from it and a seed, synthetic.py renders frames.
Fields added after videos were first cached are left out of the digest while at their defaults,
so every earlier video keeps its id, its cache file and its bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from .action_units import ACTION_UNITS, REST_AUS, WARPS
from .codec import CodecSpec
from .profiles import PROFILES

# Bump when the rendering of an existing spec changes, so caches keyed by video id are invalidated.
GENERATOR_VERSION = 1

REGION_MIXES = ("combos", "random")
Range = tuple[float, float]


@dataclass(frozen=True)
class Distractors:
    """Webcam distractors, each labelled neutral. Ranges are (low, high); a video draws one value
    per range (rates per minute become counts), so two videos of one spec differ in mix.

    Blinks replace the spec's own blinks (set ``SyntheticSpec.blink_rate_hz = 0``): single,
    double, partial (the lids close part way) and slow ones, by ``blink_kinds`` weights. Talking
    parts the lips (the mouth's dark inside shows), drops the jaw and rounds the lips at 2-6 Hz
    for seconds. Head rotation (yaw and
    pitch, a depth-aware warp of the face) drifts and turns. Twitches are quick rigid head jerks
    out and back, with a little rotation: ME-sized in time on purpose. Exposure flickers (mains
    light beating with the frame rate) and steps (auto exposure settling with an overshoot);
    noise bursts; motion blur from head speed; dropped frames (the previous frame again); a soft
    lens (down- and up-scaling). Blinks, talking, twitches and noise bursts stay ``guard_s`` away
    from every ME, so an ME's frames show the ME and the drift around it, not another event.
    """

    blink_rate_hz: Range = (0.1, 0.5)
    blink_kinds: tuple[float, float, float, float] = (0.55, 0.15, 0.15, 0.15)
    talks_per_min: Range = (0.0, 4.0)
    talk_duration_s: Range = (1.0, 5.0)
    talk_hz: Range = (2.0, 6.0)
    talk_jaw_px: Range = (2.0, 8.0)
    yaw_drift_deg: Range = (0.0, 6.0)
    pitch_drift_deg: Range = (0.0, 4.0)
    turns_per_min: Range = (0.0, 3.0)
    turn_deg: Range = (4.0, 14.0)
    turn_duration_s: Range = (0.3, 1.5)
    twitches_per_min: Range = (0.0, 4.0)
    twitch_px: Range = (2.0, 8.0)
    twitch_duration_s: Range = (0.12, 0.5)
    flicker: Range = (0.0, 0.03)
    flicker_hz: Range = (4.0, 25.0)
    exposure_steps_per_min: Range = (0.0, 2.0)
    exposure_step: Range = (0.1, 0.35)
    exposure_settle_s: Range = (0.3, 1.0)
    noise_bursts_per_min: Range = (0.0, 3.0)
    noise_burst_sigma: Range = (4.0, 12.0)
    noise_burst_s: Range = (0.1, 0.5)
    motion_blur: bool = True
    frame_drop: Range = (0.0, 0.02)
    soft_focus: Range = (0.55, 1.0)
    guard_s: float = 0.15

    def __post_init__(self) -> None:
        if len(self.blink_kinds) != 4 or min(self.blink_kinds) < 0 or sum(self.blink_kinds) <= 0:
            raise ValueError("blink_kinds: four non-negative weights (single, double, partial, "
                             "slow), not all zero")
        for name, value in asdict(self).items():
            if isinstance(value, tuple) and name != "blink_kinds" and value[0] > value[1]:
                raise ValueError(f"{name}: low {value[0]} > high {value[1]}")
        if not 0.0 < self.soft_focus[0] <= self.soft_focus[1] <= 1.0:
            raise ValueError("soft_focus: a scale in (0, 1]")


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic video contains. Ranges are (low, high), drawn uniformly per event/video.

    Amplitudes are peak displacements in pixels of the 256 px identity image; the placement warp
    scales them with the face. ``frame_size`` is (width, height); ``face_size_px`` is the side of
    the identity image in the frame (None: the frame's shorter side, so the face fills it).
    """

    duration_s: float = 30.0
    fps: float = 60.0
    n_me: int = 4
    n_mae: int = 3
    frame_size: tuple[int, int] = (256, 256)
    face_size_px: int | None = None
    me_duration_s: tuple[float, float] = (0.2, 0.5)
    mae_duration_s: tuple[float, float] = (0.6, 4.0)
    me_amplitude_px: tuple[float, float] = (1.0, 2.5)
    mae_amplitude_px: tuple[float, float] = (3.0, 8.0)
    min_gap_s: float = 1.0
    reuse_me_combo_prob: float = 0.3
    blink_rate_hz: float = 0.25
    blink_duration_s: tuple[float, float] = (0.1, 0.3)
    head_drift_px: float = 4.0
    head_drift_deg: float = 2.0
    head_drift_scale: float = 0.02
    jitter_px: float = 0.3
    n_head_moves: int = 2
    head_move_px: tuple[float, float] = (4.0, 16.0)
    head_move_duration_s: tuple[float, float] = (0.2, 0.6)
    lighting_drift: float = 0.08
    n_light_changes: int = 1
    light_change: tuple[float, float] = (0.08, 0.2)
    noise_sigma: tuple[float, float] = (0.5, 3.0)
    jpeg_quality: tuple[int, int] | None = (60, 95)
    rest_aus: tuple[tuple[str, float], ...] = ()
    """Resting offsets held in every frame: (AU name, px). A resting asymmetry or expression of
    the person's neutral face (not labelled)."""
    face_aspect: float = 1.0
    """Horizontal stretch of the face about its centre (face shape): 1.1 = 10 % wider."""
    light_gain: float = 1.0
    """Constant lighting gain of the session (0.6: a dim room)."""
    light_side: float = 0.0
    """Constant horizontal lighting slope (side light): the gain changes by +-light_side from the
    frame's centre to its left/right edge."""
    warp: str = "shepard"
    """How an AU's motion spreads over the face (action_units.WARPS)."""
    profiles: tuple[str, ...] = ("smooth",)
    """Temporal profile families; each event draws one (profiles.PROFILES)."""
    region_mix: str = "combos"
    """Which AUs an event moves: ``combos`` (prototype combinations, action_units.AU_COMBOS) or
    ``random`` (1-3 AUs drawn freely, each with its own weight and a left/right balance)."""
    au_spread: tuple[float, float] = (1.0, 1.0)
    """Scale of the AU fields' spatial reach (Shepard sigma), drawn once per video."""
    distractors: Distractors | None = None
    """Webcam distractors (:class:`Distractors`); None: only the ones above."""
    codec: CodecSpec | None = None
    """The video codec the frames reach the spotter through (codec.py: H.264 at a webcam's
    bitrate, drawn per video); None: none (each frame as the camera gave it)."""

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.fps <= 0:
            raise ValueError("duration_s and fps must be positive")
        if self.n_me < 0 or self.n_mae < 0:
            raise ValueError("n_me and n_mae must be >= 0")
        if self.me_duration_s[1] > 0.5 + 1e-9:
            raise ValueError("an ME lasts at most 0.5 s")
        if self.mae_duration_s[0] < 0.5:
            raise ValueError("a MaE lasts at least 0.5 s")
        for name, _px in self.rest_aus:
            if name not in ACTION_UNITS:
                raise ValueError(f"rest_aus: unknown AU {name!r}; known: {sorted(ACTION_UNITS)}")
        if self.face_aspect <= 0 or self.light_gain <= 0:
            raise ValueError("face_aspect and light_gain must be positive")
        if self.warp not in WARPS:
            raise ValueError(f"unknown warp {self.warp!r}; choose one of {WARPS}")
        if not self.profiles or not set(self.profiles) <= set(PROFILES):
            raise ValueError(f"profiles must be a non-empty subset of {PROFILES}")
        if self.region_mix not in REGION_MIXES:
            raise ValueError(f"unknown region_mix {self.region_mix!r}; choose one of "
                             f"{REGION_MIXES}")
        if not 0 < self.au_spread[0] <= self.au_spread[1]:
            raise ValueError("au_spread: positive (low, high)")

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    def digest(self) -> str:
        """Short stable hash of the spec and generator version (for cache keys and video ids)."""
        fields = asdict(self)
        for name, default in _DEFAULTS_OUTSIDE_DIGEST.items():
            if fields[name] == default:
                del fields[name]  # absent at defaults: older videos keep their ids and caches
        payload = json.dumps({"v": GENERATOR_VERSION, **fields}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]


# Fields added after videos were first cached: absent from the digest at their defaults.
_DEFAULTS_OUTSIDE_DIGEST = {
    "rest_aus": (), "face_aspect": 1.0, "light_gain": 1.0, "light_side": 0.0,
    "warp": "shepard", "profiles": ("smooth",), "region_mix": "combos",
    "au_spread": (1.0, 1.0), "distractors": None, "codec": None,
}


def random_look(rng: np.random.Generator) -> dict:
    """SyntheticSpec fields of one random neutral look (drawn once, constant over a video):
    1-2 resting AU offsets of 1.5-5 px, face width 0.88-1.12, room gain 0.55-1.3, side light
    +-0.35. Used for the look videos of the training set and for the calibration sessions."""
    n_rest = int(rng.integers(1, 3))
    names = rng.choice(len(REST_AUS), size=n_rest, replace=False)
    return {
        "rest_aus": tuple(
            (REST_AUS[int(i)], round(float(rng.uniform(1.5, 5.0)), 2)) for i in names
        ),
        "face_aspect": round(float(rng.uniform(0.88, 1.12)), 3),
        "light_gain": round(float(rng.uniform(0.55, 1.3)), 3),
        "light_side": round(float(rng.uniform(-0.35, 0.35)), 3),
    }


def random_framing(rng: np.random.Generator) -> dict:
    """SyntheticSpec fields of a random camera framing: a 640x480 or 480x360 frame with the
    face image 150-300 px wide (a webcam at arm's length), or the face filling a 256 px frame.
    Smaller faces give FaceMesh fewer pixels, so landmarks and crops are noisier."""
    kind = int(rng.integers(3))
    if kind == 2:
        return {}
    frame = ((640, 480), (480, 360))[kind]
    return {"frame_size": frame, "face_size_px": int(rng.integers(150, 301))}
