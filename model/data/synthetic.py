"""Seeded synthetic expression videos: real face images animated with action-unit-like motions.

Licensed spotting datasets (CAS(ME)^2, SAMM-LV) cannot be shipped, so training and tests use long
videos rendered from the shipped real face images (``model/data/faces``). What holds:

- Expressions are local, smooth displacement fields around FaceMesh landmark groups (brows, lids,
  cheeks, nose, lip corners, lips, chin), one per action unit (AU). An event combines 1-3 AUs whose
  amplitude follows an onset -> apex (short hold) -> offset profile (smoothstep ramps).
- MEs last ``me_duration_s`` (default 0.2-0.5 s) with small amplitude (1-2.5 px on the 256 px
  face image); MaEs last ``mae_duration_s`` (0.6-4 s) with 3-8 px. Both draw from the same AU
  combinations, so duration and intensity, not the AU set, separate the classes.
- Events never overlap and are separated (and kept from the video ends) by at least
  ``min_gap_s`` of neutral frames, so a 32-frame window at 60 FPS (0.53 s) rarely sees two events.
- Distractors are labelled neutral: blinks (lids only, 0.1-0.3 s, kept clear of MEs), smooth head
  drift + jitter + sudden head moves (a global similarity transform), lighting gain/gradient drift
  and sudden changes, Gaussian sensor noise and a JPEG round trip.
- Intervals are ``(onset, offset, label)`` with inclusive frame indices; every labelled frame has a
  non-zero expression amplitude and every frame outside has none.
- Everything random comes from ``numpy.random.default_rng`` seeded by ``seed`` (per-frame noise by
  ``(seed, frame index)``), and cv2 operations are deterministic: the same identity, spec and seed
  give byte-identical frames, whether rendered in one go, streamed, or frame by frame.
- Train and test identities (:func:`~.identities.train_test_identities`) are disjoint people.
- *Motion families*: ``warp`` (how an AU's motion spreads over the face: ``shepard`` or ``tps``,
  action_units.py) and ``profiles`` (the temporal shapes events draw from: ``smooth``, ``asym``,
  ``linear``, plan.py). At their defaults (``shepard``, ``smooth``) nothing changes either.

The pieces: landmarks.py (FaceMesh point groups), identities.py (the faces), action_units.py
(AUs and their displacement fields), plan.py (the per-frame schedule drawn from the seed), and
this module (the spec and the renderer).
- A session's *neutral look* can differ from the identity image (``rest_aus``, ``face_aspect``,
  ``light_gain``, ``light_side``): a constant resting AU offset (e.g. a one-sided lip corner),
  a wider or narrower face, a dim or bright room, side lighting. They are constant over the video,
  labelled neutral, and are what per-person calibration (calibration/) has to absorb. At their
  defaults they change nothing: neither the bytes nor the digest of existing videos.

Rendering per frame: one ``cv2.remap`` of the identity image by the sum of the active AUs'
precomputed unit fields, one ``cv2.warpAffine`` for head pose and placement in the canvas, then
lighting, noise and JPEG. About 3-6 ms per 256x256 frame on one core.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from .action_units import ACTION_UNITS, REST_AUS, WARPS, au_unit_field, blink_field
from .identities import IDENTITY_SIZE, Identity
from .plan import MAE, ME, NEUTRAL, PROFILES, ExpressionEvent, plan_video

logger = logging.getLogger(__name__)

# Bump when the rendering changes, so caches keyed by video id are invalidated.
GENERATOR_VERSION = 1

__all__ = ["MAE", "ME", "NEUTRAL", "SyntheticSpec", "SyntheticStream", "SyntheticVideo",
           "generate_video", "iter_frames", "random_framing", "random_look"]


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
    """Temporal profile families; each event draws one (plan.PROFILES)."""

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
    "warp": "shepard", "profiles": ("smooth",),
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


# ----------------------------------------------------------------------------------------------
# Rendering


def synthetic_video_id(identity: str, spec: SyntheticSpec, seed: int) -> str:
    """Stable id of the video (identity, spec, seed) renders: equal ids mean equal bytes."""
    return f"syn-{identity}-s{int(seed)}-{spec.digest()}"


class SyntheticStream:
    """A synthetic video rendered on demand: iterate it, index it, or :meth:`render_all` it.

    Holds the identity's precomputed AU fields and the plan; memory is O(one frame) while
    iterating, so a long 60 FPS video need not be materialised (30 s at 256x256 is 350 MB).
    """

    def __init__(self, identity: Identity, spec: SyntheticSpec, seed: int) -> None:
        self.identity = identity
        self.spec = spec
        self.seed = int(seed)
        self.plan = plan_video(spec, self.seed)
        self.fps = float(spec.fps)
        self.n_frames = self.plan.n_frames
        self.intervals: list[tuple[int, int, int]] = [
            (e.onset, e.offset, e.label) for e in self.plan.events
        ]
        self.timestamps_s = np.arange(self.n_frames, dtype=np.float64) / self.fps
        self.video_id = synthetic_video_id(identity.name, spec, self.seed)
        self._fields = {
            name: au_unit_field(identity, ACTION_UNITS[name], spec.warp)
            for name in self.plan.au_amplitude
        }
        self._blink = blink_field(identity)
        self._rest: np.ndarray | None = None
        for name, px in spec.rest_aus:
            term = au_unit_field(identity, ACTION_UNITS[name], spec.warp) * np.float32(px)
            self._rest = term if self._rest is None else self._rest + term
        s = IDENTITY_SIZE
        ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
        self._grid = np.stack([xs, ys], axis=-1)
        self._setup_canvas()

    @property
    def events(self) -> list[ExpressionEvent]:
        return list(self.plan.events)

    def labels(self) -> np.ndarray:
        """Per-frame class ids (N,) int64 from the intervals."""
        out = np.zeros(self.n_frames, np.int64)
        for onset, offset, label in self.intervals:
            out[onset : offset + 1] = label
        return out

    def _setup_canvas(self) -> None:
        import cv2

        w, h = self.spec.frame_size
        side = self.spec.face_size_px or min(w, h)
        self._scale = side / IDENTITY_SIZE
        self._centre = np.array([w / 2.0, h / 2.0])
        self._blend = side < min(w, h) or w != h
        if self._blend:
            # A plain backdrop in the colour of the identity image's border, with a soft vertical
            # gradient; the face image is feathered into it so no hard square edge shows.
            img = self.identity.image.astype(np.float32)
            border = np.concatenate([img[:8].reshape(-1, 3), img[-8:].reshape(-1, 3),
                                     img[:, :8].reshape(-1, 3), img[:, -8:].reshape(-1, 3)])
            colour = np.median(border, axis=0)
            ramp = np.linspace(1.1, 0.85, h, dtype=np.float32)[:, None, None]
            self._background = np.broadcast_to(colour * ramp, (h, w, 3)).astype(np.float32)
            mask = np.zeros((IDENTITY_SIZE, IDENTITY_SIZE), np.float32)
            m = IDENTITY_SIZE // 10
            mask[m:-m, m:-m] = 1.0
            self._mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=m / 2)
        xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
        ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
        self._xs, self._ys = xs, ys

    def _matrix(self, i: int) -> np.ndarray:
        tx, ty, rot, log_s = self.plan.pose[i]
        scale = self._scale * float(np.exp(log_s))
        a = np.deg2rad(rot)
        c, s = scale * np.cos(a), scale * np.sin(a)
        half = IDENTITY_SIZE / 2.0
        cx, cy = self._centre[0] + tx * self._scale, self._centre[1] + ty * self._scale
        matrix = np.array([[c, -s, cx - c * half + s * half], [s, c, cy - s * half - c * half]])
        aspect = self.spec.face_aspect
        if aspect != 1.0:
            # Stretch the identity image horizontally about its centre, then place it.
            stretch = np.array([[aspect, 0.0, half * (1.0 - aspect)], [0.0, 1.0, 0.0], [0, 0, 1]])
            matrix = (np.vstack([matrix, [0.0, 0.0, 1.0]]) @ stretch)[:2]
        return matrix

    def frame(self, i: int) -> np.ndarray:
        """Render frame ``i`` (H, W, 3) uint8 BGR; independent of which frames came before."""
        import cv2

        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} outside 0..{self.n_frames - 1}")
        plan = self.plan
        disp = self._rest
        for name, track in plan.au_amplitude.items():
            if track[i] != 0.0:
                term = self._fields[name] * np.float32(track[i])
                disp = term if disp is None else disp + term
        if plan.blink[i] != 0.0:
            term = self._blink * np.float32(plan.blink[i])
            disp = term if disp is None else disp + term
        face = self.identity.image
        if disp is not None:
            maps = self._grid - disp
            face = cv2.remap(face, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT101)
        w, h = self.spec.frame_size
        matrix = self._matrix(i)
        warped = cv2.warpAffine(face, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
        if self._blend:
            alpha = cv2.warpAffine(self._mask, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
            warped = warped * alpha + self._background * (1.0 - alpha)
        gx, gy = plan.gradient[i]
        slope = 1.0 + np.float32(gx) * self._xs + np.float32(gy) * self._ys
        light = np.float32(plan.gain[i]) * slope
        rng = np.random.default_rng([self.seed, 1, i])
        noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(plan.noise_sigma)
        out = np.clip(warped * light[..., None] + noise, 0, 255).astype(np.uint8)
        if plan.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, plan.jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return out

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self.frame(i)

    def render_all(self) -> np.ndarray:
        """All frames (N, H, W, 3) uint8 BGR."""
        w, h = self.spec.frame_size
        out = np.empty((self.n_frames, h, w, 3), np.uint8)
        for i in range(self.n_frames):
            out[i] = self.frame(i)
        return out


@dataclass(frozen=True)
class SyntheticVideo:
    """A rendered synthetic video: frames (N, H, W, 3) uint8 BGR with inclusive intervals."""

    video_id: str
    identity: str
    seed: int
    frames: np.ndarray
    fps: float
    intervals: list[tuple[int, int, int]]
    timestamps_s: np.ndarray
    events: list[ExpressionEvent]

    def labels(self) -> np.ndarray:
        out = np.zeros(len(self.frames), np.int64)
        for onset, offset, label in self.intervals:
            out[onset : offset + 1] = label
        return out


def generate_video(identity: Identity, spec: SyntheticSpec, seed: int) -> SyntheticVideo:
    """Render a whole video in memory (see :class:`SyntheticStream` to stream instead)."""
    stream = SyntheticStream(identity, spec, seed)
    return SyntheticVideo(
        video_id=stream.video_id,
        identity=identity.name,
        seed=stream.seed,
        frames=stream.render_all(),
        fps=stream.fps,
        intervals=list(stream.intervals),
        timestamps_s=stream.timestamps_s,
        events=stream.events,
    )


def iter_frames(identity: Identity, spec: SyntheticSpec, seed: int) -> Iterator[np.ndarray]:
    """Stream the frames of :func:`generate_video` one at a time (identical bytes)."""
    return iter(SyntheticStream(identity, spec, seed))
