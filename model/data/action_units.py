"""Action-unit-like local motions of a face, and their displacement fields.

An AU moves groups of FaceMesh landmarks (directions in inter-ocular-distance units) while anchor
landmarks stay put. How that motion spreads over the face is the *warp* family:

- ``shepard``: a normalised Gaussian (Shepard) blend of the moving and anchor points: smooth,
  local, falling off over about ``sigma_iod`` inter-ocular distances.
- ``tps``: a thin-plate spline through the moving points, the anchors, the upper face outline
  and the image border (all fixed): a global, bending-energy-minimising field with a different
  fall-off and reach. Held out of training to test generalisation to motion the model never saw.

Fields are unit fields: scaled so the largest displacement is 1 px, then multiplied by the
expression's amplitude per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .identities import IDENTITY_SIZE, Identity
from .landmarks import (
    BROW_L_INNER,
    BROW_L_MID,
    BROW_L_OUTER,
    BROW_R_INNER,
    BROW_R_MID,
    BROW_R_OUTER,
    CHEEK_L,
    CHEEK_R,
    CHIN,
    CORNER_L,
    CORNER_R,
    EYE_CORNERS,
    FACE_OUTLINE_UPPER,
    FOREHEAD,
    LOWER_LID_L,
    LOWER_LID_R,
    LOWER_LIP,
    NOSE_SIDE_L,
    NOSE_SIDE_R,
    NOSE_TIP,
    UPPER_LID_L,
    UPPER_LID_R,
    UPPER_LIP,
)

WARPS = ("shepard", "tps")


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




# Resting offsets a neutral face can carry: one-sided or partial AUs (px on the 256 px image).
REST_AUS = (
    "AU12U_unilateral_corner_pull",
    "AU4_brow_lower",
    "AU15_lip_corner_depress",
    "AU2_outer_brow_raise",
    "AU7_lid_tighten",
    "AU24_lip_press",
)


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



def _tps_field(
    moving: np.ndarray, vectors: np.ndarray, fixed: np.ndarray, size: int
) -> np.ndarray:
    """Thin-plate-spline field (size, size, 2) through ``vectors`` at the moving points and 0 at
    the fixed points, evaluated on a 64x64 grid and resized (the spline is smooth)."""
    import cv2
    from scipy.interpolate import RBFInterpolator

    points = np.concatenate([moving, fixed]).astype(np.float64)
    values = np.concatenate([vectors, np.zeros_like(fixed)]).astype(np.float64)
    spline = RBFInterpolator(points, values, kernel="thin_plate_spline", smoothing=1e-3)
    coarse = 64
    axis = (np.arange(coarse) + 0.5) * size / coarse
    gx, gy = np.meshgrid(axis, axis)
    fld = spline(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(coarse, coarse, 2)
    return cv2.resize(fld.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


def _border_points(size: int, per_side: int = 5) -> np.ndarray:
    t = np.linspace(0.0, size - 1.0, per_side)
    edge = np.full_like(t, size - 1.0)
    zero = np.zeros_like(t)
    return np.concatenate([np.stack([t, zero], 1), np.stack([t, edge], 1),
                           np.stack([zero, t], 1), np.stack([edge, t], 1)])


def au_unit_field(identity: Identity, au: ActionUnit, warp: str = "shepard") -> np.ndarray:
    """The AU's displacement field (256, 256, 2) scaled so its largest displacement is 1 px."""
    if warp not in WARPS:
        raise ValueError(f"unknown warp {warp!r}; choose one of {WARPS}")
    iod = identity.iod_px
    moving, vectors = [], []
    for group in au.groups:
        for idx in group.indices:
            moving.append(identity.landmarks[idx])
            vectors.append(group.vector)
    anchors = identity.landmarks[list(au.anchors)] if au.anchors else np.zeros((0, 2))
    if warp == "shepard":
        fld = _shepard_field(
            np.asarray(moving, np.float32), np.asarray(vectors, np.float32),
            np.asarray(anchors, np.float32), au.sigma_iod * iod, IDENTITY_SIZE,
        )
    else:
        moved = {i for g in au.groups for i in g.indices}
        outline = [i for i in FACE_OUTLINE_UPPER if i not in moved]
        fixed = np.concatenate([anchors, identity.landmarks[outline],
                                _border_points(IDENTITY_SIZE)])
        fld = _tps_field(np.asarray(moving), np.asarray(vectors), fixed, IDENTITY_SIZE)
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
