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
- Train and test identities (:func:`train_test_identities`) are disjoint people.
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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FACES_DIR = Path(__file__).resolve().parent / "faces"
# Bump when the rendering changes, so caches keyed by video id are invalidated.
GENERATOR_VERSION = 1
IDENTITY_SIZE = 256

# Disjoint by person. door-man and single-face might be the same person, so both are in train.
TEST_IDENTITIES: tuple[str, ...] = ("astronaut", "f13-anc", "wolfgang")
TRAIN_IDENTITIES: tuple[str, ...] = (
    "door-man",
    "f1-su",
    "f15-hao",
    "group-1",
    "group-2",
    "group-3",
    "group-4",
    "group-5",
    "single-face",
)

NEUTRAL, ME, MAE = 0, 1, 2


@dataclass(frozen=True)
class Group:
    """Landmarks moved by one displacement (x, y) in inter-ocular-distance units (image axes)."""

    indices: tuple[int, ...]
    vector: tuple[float, float]


@dataclass(frozen=True)
class ActionUnit:
    """An AU-like local motion: moving landmark groups, anchored landmarks and a spatial scale."""

    name: str
    groups: tuple[Group, ...]
    anchors: tuple[int, ...]
    sigma_iod: float


# FaceMesh landmark groups. "L"/"R" = image left/right (subject's right/left on a frontal face).
BROW_L_INNER = (107, 66, 55, 65)
BROW_R_INNER = (336, 296, 285, 295)
BROW_L_OUTER = (70, 63, 46, 53)
BROW_R_OUTER = (300, 293, 276, 283)
BROW_L_MID = (105, 52)
BROW_R_MID = (334, 282)
UPPER_LID_L = (161, 160, 159, 158, 157)
UPPER_LID_R = (388, 387, 386, 385, 384)
LOWER_LID_L = (163, 144, 145, 153, 154)
LOWER_LID_R = (390, 373, 374, 380, 381)
EYE_CORNERS = (33, 133, 263, 362)
CHEEK_L = (117, 118, 101, 50)
CHEEK_R = (346, 347, 330, 280)
NOSE_SIDE_L = (129, 49, 48, 64, 98)
NOSE_SIDE_R = (358, 279, 278, 294, 327)
NOSE_TIP = (1, 4)
UPPER_LIP = (0, 37, 267, 39, 269, 13, 82, 312)
LOWER_LIP = (17, 84, 314, 14, 87, 317, 181, 405)
CORNER_L = (61, 146, 185)
CORNER_R = (291, 375, 409)
CHIN = (152, 148, 377, 175, 199, 200)
FOREHEAD = (10, 151, 109, 338)

ACTION_UNITS: dict[str, ActionUnit] = {
    au.name: au
    for au in (
        ActionUnit(
            "AU1_inner_brow_raise",
            (Group(BROW_L_INNER, (0.0, -1.0)), Group(BROW_R_INNER, (0.0, -1.0))),
            EYE_CORNERS + LOWER_LID_L + LOWER_LID_R + FOREHEAD,
            0.16,
        ),
        ActionUnit(
            "AU2_outer_brow_raise",
            (
                Group(BROW_L_OUTER, (0.0, -1.0)),
                Group(BROW_R_OUTER, (0.0, -1.0)),
                Group(BROW_L_MID, (0.0, -0.7)),
                Group(BROW_R_MID, (0.0, -0.7)),
            ),
            EYE_CORNERS + LOWER_LID_L + LOWER_LID_R + FOREHEAD,
            0.18,
        ),
        ActionUnit(
            "AU4_brow_lower",
            (
                Group(BROW_L_INNER, (0.6, 0.8)),
                Group(BROW_R_INNER, (-0.6, 0.8)),
                Group(BROW_L_MID + BROW_L_OUTER, (0.2, 0.6)),
                Group(BROW_R_MID + BROW_R_OUTER, (-0.2, 0.6)),
            ),
            LOWER_LID_L + LOWER_LID_R + FOREHEAD + NOSE_TIP,
            0.16,
        ),
        ActionUnit(
            "AU5_upper_lid_raise",
            (Group(UPPER_LID_L, (0.0, -1.0)), Group(UPPER_LID_R, (0.0, -1.0))),
            LOWER_LID_L + LOWER_LID_R + BROW_L_MID + BROW_R_MID,
            0.08,
        ),
        ActionUnit(
            "AU6_cheek_raise",
            (
                Group(CHEEK_L, (0.0, -1.0)),
                Group(CHEEK_R, (0.0, -1.0)),
                Group(LOWER_LID_L, (0.0, -0.5)),
                Group(LOWER_LID_R, (0.0, -0.5)),
            ),
            UPPER_LID_L + UPPER_LID_R + NOSE_TIP + CHIN,
            0.2,
        ),
        ActionUnit(
            "AU7_lid_tighten",
            (
                Group(LOWER_LID_L, (0.0, -1.0)),
                Group(LOWER_LID_R, (0.0, -1.0)),
                Group(UPPER_LID_L, (0.0, 0.35)),
                Group(UPPER_LID_R, (0.0, 0.35)),
            ),
            BROW_L_MID + BROW_R_MID + CHEEK_L + CHEEK_R,
            0.08,
        ),
        ActionUnit(
            "AU9_nose_wrinkle",
            (
                Group(NOSE_SIDE_L, (0.15, -1.0)),
                Group(NOSE_SIDE_R, (-0.15, -1.0)),
                Group(BROW_L_INNER, (0.0, 0.4)),
                Group(BROW_R_INNER, (0.0, 0.4)),
            ),
            NOSE_TIP + EYE_CORNERS + CHIN,
            0.13,
        ),
        ActionUnit(
            "AU10_upper_lip_raise",
            (Group(UPPER_LIP, (0.0, -1.0)), Group(CORNER_L + CORNER_R, (0.0, -0.4))),
            LOWER_LIP + NOSE_TIP + CHIN,
            0.13,
        ),
        ActionUnit(
            "AU12_lip_corner_pull",
            (Group(CORNER_L, (-0.6, -0.8)), Group(CORNER_R, (0.6, -0.8))),
            (0, 17, *NOSE_TIP, 152),
            0.14,
        ),
        ActionUnit(
            "AU12U_unilateral_corner_pull",
            (Group(CORNER_R, (0.6, -0.8)),),
            (0, 17, *NOSE_TIP, 152, 61),
            0.14,
        ),
        ActionUnit(
            "AU15_lip_corner_depress",
            (Group(CORNER_L, (-0.2, 1.0)), Group(CORNER_R, (0.2, 1.0))),
            (0, 17, *NOSE_TIP),
            0.14,
        ),
        ActionUnit(
            "AU17_chin_raise",
            (Group(CHIN, (0.0, -1.0)), Group(LOWER_LIP, (0.0, -0.6))),
            (0, 37, 267, *NOSE_TIP),
            0.18,
        ),
        ActionUnit(
            "AU20_lip_stretch",
            (Group(CORNER_L, (-1.0, 0.2)), Group(CORNER_R, (1.0, 0.2))),
            (0, 17, *NOSE_TIP),
            0.14,
        ),
        ActionUnit(
            "AU24_lip_press",
            (
                Group(UPPER_LIP, (0.0, 0.6)),
                Group(LOWER_LIP, (0.0, -0.6)),
                Group(CORNER_L, (0.4, 0.0)),
                Group(CORNER_R, (-0.4, 0.0)),
            ),
            (*NOSE_TIP, 152),
            0.12,
        ),
        ActionUnit(
            "AU26_jaw_drop",
            (Group(LOWER_LIP, (0.0, 1.0)), Group(CHIN, (0.0, 1.0))),
            UPPER_LIP + NOSE_TIP + CORNER_L[:1] + CORNER_R[:1],
            0.2,
        ),
    )
}

# AU combinations an event draws from (prototype expressions and single AUs).
AU_COMBOS: tuple[tuple[str, ...], ...] = (
    ("AU6_cheek_raise", "AU12_lip_corner_pull"),
    ("AU12_lip_corner_pull",),
    ("AU12U_unilateral_corner_pull",),
    ("AU1_inner_brow_raise", "AU2_outer_brow_raise", "AU5_upper_lid_raise"),
    ("AU1_inner_brow_raise", "AU2_outer_brow_raise"),
    ("AU4_brow_lower", "AU7_lid_tighten"),
    ("AU4_brow_lower", "AU7_lid_tighten", "AU24_lip_press"),
    ("AU4_brow_lower",),
    ("AU9_nose_wrinkle", "AU10_upper_lip_raise"),
    ("AU9_nose_wrinkle",),
    ("AU1_inner_brow_raise", "AU4_brow_lower", "AU15_lip_corner_depress"),
    ("AU15_lip_corner_depress", "AU17_chin_raise"),
    ("AU17_chin_raise", "AU24_lip_press"),
    ("AU20_lip_stretch",),
    ("AU7_lid_tighten",),
    ("AU2_outer_brow_raise",),
    ("AU26_jaw_drop",),
)

BLINK_PAIRS: tuple[tuple[int, int], ...] = (
    *zip(UPPER_LID_L, LOWER_LID_L, strict=True),
    *zip(UPPER_LID_R, LOWER_LID_R, strict=True),
)


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

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    def digest(self) -> str:
        """Short stable hash of the spec and generator version (for cache keys and video ids)."""
        fields = asdict(self)
        for name, default in _NEUTRAL_LOOK_DEFAULTS.items():
            if fields[name] == default:
                del fields[name]  # absent at defaults: older videos keep their ids and caches
        payload = json.dumps({"v": GENERATOR_VERSION, **fields}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]


_NEUTRAL_LOOK_DEFAULTS = {"rest_aus": (), "face_aspect": 1.0, "light_gain": 1.0, "light_side": 0.0}

# Resting offsets a neutral face can carry: one-sided or partial AUs (px on the 256 px image).
REST_AUS = (
    "AU12U_unilateral_corner_pull",
    "AU4_brow_lower",
    "AU15_lip_corner_depress",
    "AU2_outer_brow_raise",
    "AU7_lid_tighten",
    "AU24_lip_press",
)


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


@dataclass(frozen=True)
class Identity:
    """A real face: a 256x256 BGR image and its FaceMesh landmarks (468, 2) in image pixels."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray

    @property
    def iod_px(self) -> float:
        left = self.landmarks[list(EYE_CORNERS[:2])].mean(axis=0)
        right = self.landmarks[list(EYE_CORNERS[2:])].mean(axis=0)
        return float(np.linalg.norm(right - left))


def available_identities(faces_dir: Path = FACES_DIR) -> list[str]:
    """Names of the shipped identity images (file stems), sorted."""
    return sorted(p.stem for p in faces_dir.glob("*.jpg"))


def load_identities(
    names: Sequence[str] | None = None, faces_dir: Path = FACES_DIR
) -> list[Identity]:
    """Load identity images and detect their landmarks with FaceMesh (about 20 ms each)."""
    import cv2

    from .align import FaceAligner

    names = list(names) if names is not None else available_identities(faces_dir)
    identities = []
    with FaceAligner(static_image_mode=True, max_faces=1) as aligner:
        for name in names:
            path = faces_dir / f"{name}.jpg"
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"identity image not found or unreadable: {path}")
            if image.shape[:2] != (IDENTITY_SIZE, IDENTITY_SIZE):
                size = (IDENTITY_SIZE, IDENTITY_SIZE)
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            faces = aligner.detect(image)
            if not faces:
                raise ValueError(f"no face found in identity image {path}")
            identities.append(Identity(name=name, image=image, landmarks=faces[0]))
    return identities


def train_test_identities() -> tuple[list[str], list[str]]:
    """Fixed, disjoint (train, test) identity names; a person never appears in both."""
    assert not set(TRAIN_IDENTITIES) & set(TEST_IDENTITIES)
    return list(TRAIN_IDENTITIES), list(TEST_IDENTITIES)


# ----------------------------------------------------------------------------------------------
# Displacement fields


def _shepard_field(
    moving: np.ndarray, vectors: np.ndarray, anchors: np.ndarray, sigma: float, size: int
) -> np.ndarray:
    """Smooth field (size, size, 2): ~vectors near moving points, 0 near anchors and far away.

    d(x) = sum_m w_m(x) v_m / (sum_m w_m(x) + sum_a w_a(x) + eps), w = Gaussian of distance. The
    eps term makes the field fall off over about one sigma away from the moving points.
    """
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)

    def weights(points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.zeros((0, size, size), np.float32)
        dx = xs[None] - points[:, 0, None, None]
        dy = ys[None] - points[:, 1, None, None]
        return np.exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).astype(np.float32)

    w_move = weights(moving)
    w_anchor = weights(anchors)
    den = w_move.sum(axis=0) + w_anchor.sum(axis=0) + 0.3
    num = np.einsum("khw,kc->hwc", w_move, vectors.astype(np.float32))
    return (num / den[..., None]).astype(np.float32)


def au_unit_field(identity: Identity, au: ActionUnit) -> np.ndarray:
    """The AU's displacement field (256, 256, 2) scaled so its largest displacement is 1 px."""
    iod = identity.iod_px
    moving, vectors = [], []
    for group in au.groups:
        for idx in group.indices:
            moving.append(identity.landmarks[idx])
            vectors.append(group.vector)
    anchors = identity.landmarks[list(au.anchors)] if au.anchors else np.zeros((0, 2))
    fld = _shepard_field(
        np.asarray(moving, np.float32), np.asarray(vectors, np.float32),
        np.asarray(anchors, np.float32), au.sigma_iod * iod, IDENTITY_SIZE,
    )
    peak = float(np.linalg.norm(fld, axis=-1).max())
    return fld / max(peak, 1e-6)


def blink_field(identity: Identity) -> np.ndarray:
    """Field (256, 256, 2) that, at amplitude 1, moves the upper lids onto the lower lids."""
    lm = identity.landmarks
    moving = np.array([lm[u] for u, _ in BLINK_PAIRS], np.float32)
    vectors = np.array([lm[lo] - lm[u] for u, lo in BLINK_PAIRS], np.float32)
    anchors_idx = LOWER_LID_L + LOWER_LID_R + EYE_CORNERS + BROW_L_MID + BROW_R_MID
    anchors = lm[list(anchors_idx)].astype(np.float32)
    fld = _shepard_field(moving, vectors, anchors, 0.07 * identity.iod_px, IDENTITY_SIZE)
    # The normalised Shepard sum reaches only part of each vector at the lid; rescale so the
    # lid centre travels the full lid gap at amplitude 1.
    centre = lm[[UPPER_LID_L[2], UPPER_LID_R[2]]].round().astype(int)
    reached = np.mean([np.linalg.norm(fld[y, x]) for x, y in centre])
    gap = np.mean([np.linalg.norm(v) for v in vectors[[2, 7]]])
    return fld * float(gap / max(reached, 1e-6))


# ----------------------------------------------------------------------------------------------
# Schedule


@dataclass(frozen=True)
class ExpressionEvent:
    """One labelled expression: inclusive frames [onset, offset], its AUs and peak amplitude."""

    onset: int
    offset: int
    label: int
    aus: tuple[str, ...]
    amplitude_px: float


@dataclass
class _Plan:
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


def expression_profile(n_frames: int, onset_frac: float, hold_frac: float) -> np.ndarray:
    """Amplitude (n,) in (0, 1]: smooth rise, hold at 1, smooth fall; sampled at frame centres."""
    t = (np.arange(n_frames) + 0.5) / n_frames
    rise_end = onset_frac
    fall_start = min(onset_frac + hold_frac, 1.0)
    rise = _smoothstep(t / max(rise_end, 1e-6))
    fall = _smoothstep((1.0 - t) / max(1.0 - fall_start, 1e-6))
    return np.minimum(rise, fall)


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


def plan_video(spec: SyntheticSpec, seed: int) -> _Plan:
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
        if label == ME:
            me_combos.append(combo)
            amp = rng.uniform(*spec.me_amplitude_px)
            prof = expression_profile(length, rng.uniform(0.3, 0.5), rng.uniform(0.0, 0.2))
        else:
            amp = rng.uniform(*spec.mae_amplitude_px)
            prof = expression_profile(length, rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.5))
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
    return _Plan(n, events, au_amp, blink, pose, gain, gradient, noise_sigma, quality, blink_frames)


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
            name: au_unit_field(identity, ACTION_UNITS[name]) for name in self.plan.au_amplitude
        }
        self._blink = blink_field(identity)
        self._rest: np.ndarray | None = None
        for name, px in spec.rest_aus:
            term = au_unit_field(identity, ACTION_UNITS[name]) * np.float32(px)
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
