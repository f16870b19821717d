"""The geometry channel: where the face's expressive points sit relative to its own neutral shape.

Per 60 Hz slot, from the tracked face's 468 FaceMesh landmarks in crop pixels (the alignment
transform applied to the frame's landmarks), a :class:`GeometryTracker` computes one float32
vector. What holds:

- *Head motion removed.* A least-squares similarity fit of the rigid points (eye corners, nose
  bridge and tip, upper face outline; ``landmarks.RIGID``) onto the same points of the segment's
  first slot maps every slot into one frame of reference. The jaw line is not rigid (it moves
  with the mouth), so it is not used.
- *Smoothed.* The fitted points are averaged over the trailing ``smooth_slots`` slots (83 ms at
  the default 5): FaceMesh jitters by about as much as a micro-expression moves a point, and on
  the held-out test videos this smoothing lifted the peer's MaE F1 from 64 to 73.
- *Identity-light.* Each expressive landmark group (brows, lids, cheeks, nose sides, lips, lip
  corners, chin: ``GROUPS``) is reduced to its centroid, and compared with a *running neutral*:
  the per-coordinate median of the trailing ``neutral_s`` seconds, refreshed every
  ``update_every`` slots. A face's resting shape cancels; a long expression (up to ~40 % of
  ``neutral_s``) does not pull the neutral towards itself.
- *Units.* Displacements are in inter-ocular distances (IOD) of the reference, so face size and
  camera distance cancel. Per region (``REGIONS``) the RMS displacement, and overall the mean of
  the three most displaced groups (an expression moves a few groups, so an RMS over all of them
  dilutes it), are also robust z-scores against the stream's own running baseline: (x - median)
  / (1.4826 MAD) over the trailing ``scale_s`` seconds. So one threshold works for a steady
  high-resolution face and for a jittery small one.
- *Causal and deterministic.* A slot's vector depends only on that slot and earlier ones of the
  same segment, so streaming (one slot at a time) and offline (:func:`geometry_features` over a
  whole video) give identical vectors. ``reset()`` starts a new segment.

The vector (``GEOMETRY_DIMS`` floats): ``[group displacements (G, 2) flattened, region RMS (R),
top-3 mean (1), region z (R), overall z (1)]``. The window head (model/fesnet.py) reads it
beside the pixel features; the training-free peer (model/peer.py) reads the overall z alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .data import landmarks as lm

GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("brow_l_inner", lm.BROW_L_INNER),
    ("brow_r_inner", lm.BROW_R_INNER),
    ("brow_l_outer", lm.BROW_L_OUTER),
    ("brow_r_outer", lm.BROW_R_OUTER),
    ("brow_l_mid", lm.BROW_L_MID),
    ("brow_r_mid", lm.BROW_R_MID),
    ("upper_lid_l", lm.UPPER_LID_L),
    ("upper_lid_r", lm.UPPER_LID_R),
    ("lower_lid_l", lm.LOWER_LID_L),
    ("lower_lid_r", lm.LOWER_LID_R),
    ("cheek_l", lm.CHEEK_L),
    ("cheek_r", lm.CHEEK_R),
    ("nose_side_l", lm.NOSE_SIDE_L),
    ("nose_side_r", lm.NOSE_SIDE_R),
    ("upper_lip", lm.UPPER_LIP),
    ("lower_lip", lm.LOWER_LIP),
    ("corner_l", lm.CORNER_L),
    ("corner_r", lm.CORNER_R),
    ("chin", lm.CHIN),
)
GROUP_NAMES = tuple(name for name, _ in GROUPS)

# Regions an event reports ("which regions moved") and the per-region scales: name -> groups.
REGIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("brows", ("brow_l_inner", "brow_r_inner", "brow_l_outer", "brow_r_outer", "brow_l_mid",
               "brow_r_mid")),
    ("eyes", ("upper_lid_l", "upper_lid_r", "lower_lid_l", "lower_lid_r")),
    ("nose", ("nose_side_l", "nose_side_r")),
    ("cheeks", ("cheek_l", "cheek_r")),
    ("mouth", ("upper_lip", "lower_lip", "corner_l", "corner_r", "chin")),
)
REGION_NAMES = tuple(name for name, _ in REGIONS)

N_GROUPS = len(GROUPS)
N_REGIONS = len(REGIONS)
GEOMETRY_DIMS = 2 * N_GROUPS + 2 * (N_REGIONS + 1)
# Parts of the vector.
DISP = slice(0, 2 * N_GROUPS)
RMS = slice(2 * N_GROUPS, 2 * N_GROUPS + N_REGIONS)
RMS_ALL = 2 * N_GROUPS + N_REGIONS
Z_ALL = GEOMETRY_DIMS - 1

_RIGID = np.array(lm.RIGID)
_EYE_L = np.array(lm.EYE_CORNERS[:2])
_EYE_R = np.array(lm.EYE_CORNERS[2:])
_POINTS = np.array(sorted({i for _, idx in GROUPS for i in idx}))  # every expressive point
# Group centroids as one matrix product over the expressive points: (G, P) rows of 1/n.
_CENTROID = np.zeros((len(GROUPS), len(_POINTS)))
for _g, (_, _idx) in enumerate(GROUPS):
    _CENTROID[_g, np.searchsorted(_POINTS, _idx)] = 1.0 / len(_idx)
# Region means of squared group displacements, also one matrix: (R, G).
_REGION_MEAN = np.zeros((len(REGIONS), len(GROUPS)))
for _r, (_, _groups) in enumerate(REGIONS):
    _REGION_MEAN[_r, [GROUP_NAMES.index(g) for g in _groups]] = 1.0 / len(_groups)


@dataclass(frozen=True)
class GeometryConfig:
    """Settings of the geometry channel. Checkpoints store them beside the weights, so the
    streaming spotter computes exactly the vectors the window head was trained on."""

    fps: float = 60.0
    smooth_slots: int = 5
    """Trailing slots the fitted points are averaged over."""
    neutral_s: float = 10.0
    """Trailing span whose per-coordinate median is the neutral shape."""
    scale_s: float = 20.0
    """Trailing span of the RMS displacements whose median and MAD are the baseline of ``z``."""
    update_every: int = 8
    """Slots between refreshes of the neutral shape and the noise scales (medians cost more
    than the rest of a slot's work together)."""
    min_scale_iod: float = 0.002
    """Floor of the z-score's scale (1.4826 MAD), in IOD: a perfectly still face does not make
    ``z`` explode."""

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.neutral_s <= 0 or self.scale_s <= 0:
            raise ValueError("fps, neutral_s and scale_s must be positive")
        if self.update_every < 1 or self.min_scale_iod <= 0 or self.smooth_slots < 1:
            raise ValueError("update_every and smooth_slots must be >= 1, min_scale_iod > 0")

    @property
    def neutral_slots(self) -> int:
        return max(1, round(self.neutral_s * self.fps))

    @property
    def scale_slots(self) -> int:
        return max(1, round(self.scale_s * self.fps))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GeometryConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GeometryConfig keys: {sorted(unknown)}")
        return cls(**d)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama, no reflection) mapping points ``src`` (K, 2) onto
    ``dst`` (K, 2): returns (A (2, 2) = scale * rotation, t (2,)) with dst ~ src @ A.T + t."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    # Complex-number form of the 2D similarity: a = sum(conj(s) * d) / sum(|s|^2).
    sc = s[:, 0] + 1j * s[:, 1]
    dc = d[:, 0] + 1j * d[:, 1]
    a = np.vdot(sc, dc) / max(float(np.vdot(sc, sc).real), 1e-12)
    A = np.array([[a.real, -a.imag], [a.imag, a.real]])
    return A, mu_d - mu_s @ A.T


class GeometryTracker:
    """Per-stream state of the geometry channel: one :meth:`update` per slot, :meth:`reset`
    when the slot timeline restarts (face lost, source gap). See the module docstring."""

    def __init__(self, cfg: GeometryConfig | None = None) -> None:
        self.cfg = cfg or GeometryConfig()
        self._recent = np.zeros((self.cfg.smooth_slots, N_GROUPS, 2), np.float64)
        self._shapes = np.zeros((self.cfg.neutral_slots, N_GROUPS, 2), np.float64)
        self._rms = np.zeros((self.cfg.scale_slots, N_REGIONS + 1), np.float64)
        self.reset()

    def reset(self) -> None:
        self._ref: np.ndarray | None = None  # reference rigid points (K, 2)
        self._iod = 1.0
        self.n_slots = 0
        self._neutral: np.ndarray | None = None
        self._baseline: tuple[np.ndarray, np.ndarray] | None = None  # (median, scale)

    def _shape(self, landmarks: np.ndarray) -> np.ndarray:
        """Group centroids (G, 2) in reference IOD units after the rigid fit."""
        pts = np.asarray(landmarks, np.float64)
        if self._ref is None:
            self._ref = pts[_RIGID].copy()
            eye_l, eye_r = pts[_EYE_L].mean(axis=0), pts[_EYE_R].mean(axis=0)
            self._iod = max(float(np.linalg.norm(eye_r - eye_l)), 1e-6)
        A, t = similarity_fit(pts[_RIGID], self._ref)
        # The fit is affine, so it commutes with averaging: transform the 19 centroids only.
        return ((_CENTROID @ pts[_POINTS]) @ A.T + t) / self._iod

    def update(self, landmarks: np.ndarray) -> np.ndarray:
        """One slot's (468, 2) crop-pixel landmarks -> its float32 vector (GEOMETRY_DIMS,)."""
        cfg = self.cfg
        k = self.n_slots
        self._recent[k % cfg.smooth_slots] = self._shape(landmarks)
        shape = self._recent[: min(k + 1, cfg.smooth_slots)].mean(axis=0)
        self._shapes[k % cfg.neutral_slots] = shape
        if self._neutral is None or k % cfg.update_every == 0:
            held = self._shapes[: min(k + 1, cfg.neutral_slots)]
            self._neutral = np.median(held, axis=0)
        disp = shape - self._neutral  # (G, 2)
        sq = (disp**2).sum(axis=1)  # (G,)
        top3 = np.sqrt(np.partition(sq, -3)[-3:]).mean()
        rms = np.append(np.sqrt(_REGION_MEAN @ sq), top3)
        self._rms[k % cfg.scale_slots] = rms
        if self._baseline is None or k % cfg.update_every == 0:
            held = self._rms[: min(k + 1, cfg.scale_slots)]
            med = np.median(held, axis=0)
            mad = np.median(np.abs(held - med), axis=0)
            self._baseline = med, np.maximum(1.4826 * mad, cfg.min_scale_iod)
        z = (rms - self._baseline[0]) / self._baseline[1]
        self.n_slots += 1
        return np.concatenate([disp.ravel(), rms, z]).astype(np.float32)


def geometry_features(landmarks: np.ndarray, cfg: GeometryConfig | None = None) -> np.ndarray:
    """A whole segment's landmarks (N, 468, 2) -> vectors (N, GEOMETRY_DIMS): exactly what a
    stream's tracker returns slot by slot."""
    tracker = GeometryTracker(cfg)
    out = np.empty((len(landmarks), GEOMETRY_DIMS), np.float32)
    for i, pts in enumerate(landmarks):
        out[i] = tracker.update(pts)
    return out


def region_shares(vectors: np.ndarray) -> dict[str, float]:
    """Which regions moved over some slots (K, GEOMETRY_DIMS): see :func:`shares_of_rms`."""
    v = np.asarray(vectors, np.float32).reshape(-1, GEOMETRY_DIMS)
    return shares_of_rms(v[:, RMS])


def shares_of_rms(rms: np.ndarray) -> dict[str, float]:
    """Each region's share of the summed mean RMS displacement over some slots' region RMS
    (K, N_REGIONS), rounded to 0.01, largest first; {} when nothing moved."""
    mean_rms = np.asarray(rms, np.float32).reshape(-1, N_REGIONS).mean(axis=0)
    total = float(mean_rms.sum())
    if total <= 0:
        return {}
    shares = {name: round(float(r) / total, 2) for name, r in zip(REGION_NAMES, mean_rms,
                                                                  strict=True)}
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))
