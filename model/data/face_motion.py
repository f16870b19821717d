"""Face motions that are not expressions, as displacement fields on an identity image: talking
(the lips parting with the mouth's dark inside, the jaw, lip rounding), head rotation (yaw and
pitch), and the left/right masks of sided AUs. The renderer (synthetic.py) adds them to the AU
fields; rotation is a second remap after the mouth's inside is drawn.

Head rotation is approximated on the 2D image: a depth map (an ellipsoid over the face outline
plus a nose bump) gives every face pixel a depth ``z``; turning by yaw ``a`` moves it by
``x (cos a - 1) + z sin a`` (pitch: the same in y). The rim of the face has depth 0 and stays
put, the nose moves most, and the field fades to zero just outside the face outline, so hair and
background do not tear. Good to about 20 degrees; past that a 2D warp cannot show the hidden side.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .action_units import ActionUnit, Group, au_unit_field
from .identities import IDENTITY_SIZE, Identity
from .landmarks import (
    CHIN,
    CORNER_L,
    CORNER_R,
    LOWER_LIP,
    NOSE_BRIDGE,
    NOSE_TIP,
    UPPER_LIP,
)
from .profiles import smoothstep

# Inner lip contour, corner to corner: the mouth opening lies between these two lines.
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
             109)

LIP_ROUND = ActionUnit(
    "talk_lip_round",
    (Group(CORNER_L, (0.8, 0.0)), Group(CORNER_R, (-0.8, 0.0)), Group(UPPER_LIP, (0.0, -0.25)),
     Group(LOWER_LIP, (0.0, 0.25))),
    NOSE_TIP + CHIN,
    0.12,
)


def spread_field(identity: Identity, au: ActionUnit, warp: str, spread: float) -> np.ndarray:
    """An AU's unit field with its Shepard reach scaled by ``spread`` (1: the AU's own)."""
    if spread != 1.0:
        au = replace(au, sigma_iod=au.sigma_iod * spread)
    return au_unit_field(identity, au, warp)


def side_masks(identity: Identity) -> dict[str, np.ndarray]:
    """Soft masks (256, 256) of the image-left ("L") and image-right ("R") half of the face,
    split at the midline through the nose bridge and chin; they sum to 1."""
    lm = identity.landmarks
    top, bottom = lm[list(NOSE_BRIDGE)].mean(axis=0), lm[list(CHIN)].mean(axis=0)
    ys, xs = np.mgrid[0:IDENTITY_SIZE, 0:IDENTITY_SIZE].astype(np.float32)
    dy = max(float(bottom[1] - top[1]), 1.0)
    mid_x = top[0] + (ys - top[1]) * float(bottom[0] - top[0]) / dy
    width = 0.08 * identity.iod_px
    left = 1.0 / (1.0 + np.exp((xs - mid_x) / width))
    return {"L": left.astype(np.float32), "R": (1.0 - left).astype(np.float32)}


class FaceMotion:
    """Precomputed talking and rotation fields and the mouth contour of one identity."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.round = au_unit_field(identity, LIP_ROUND)
        self._jaw_basis()
        self._rotation_basis()

    def _jaw_basis(self) -> None:
        """The talking jaw as a field that *splits* at the lip seam: below the seam (between the
        mouth corners) everything moves down by the full amount at once, so the lips part
        instead of stretching; beyond the corners the lower face follows smoothly; below the
        chin and past the jaw the motion fades."""
        lm = self.identity.landmarks
        iod = self.identity.iod_px
        seam = (lm[list(INNER_UPPER)] + lm[list(INNER_LOWER)]) / 2.0
        seam = seam[np.argsort(seam[:, 0])]
        ys, xs = np.mgrid[0:IDENTITY_SIZE, 0:IDENTITY_SIZE].astype(np.float32)
        self._seam_y = np.interp(xs, seam[:, 0], seam[:, 1]).astype(np.float32)
        left, right = float(seam[0, 0]), float(seam[-1, 0])
        u = (xs - left) / max(right - left, 1.0)
        self._taper = np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 0.6,
                               0.0).astype(np.float32)
        below = ys - self._seam_y
        step = 1.0 / (1.0 + np.exp(-below / 0.6))
        ramp = smoothstep(below / (0.35 * iod))
        chin_y = float(lm[list(CHIN)][:, 1].max())
        fade = smoothstep((chin_y + 0.35 * iod - ys) / (0.35 * iod))
        across = np.exp(-(((xs - (left + right) / 2) / (0.9 * iod)) ** 2))
        jaw_y = (self._taper * step + (1.0 - self._taper) * ramp) * fade * across
        self.jaw = np.zeros((IDENTITY_SIZE, IDENTITY_SIZE, 2), np.float32)
        self.jaw[..., 1] = jaw_y
        self._rows = ys

    def _rotation_basis(self) -> None:
        lm = self.identity.landmarks
        oval = lm[list(FACE_OVAL)]
        centre = oval.mean(axis=0)
        half = (oval.max(axis=0) - oval.min(axis=0)) / 2.0
        ys, xs = np.mgrid[0:IDENTITY_SIZE, 0:IDENTITY_SIZE].astype(np.float32)
        dx, dy = xs - centre[0], ys - centre[1]
        r2 = (dx / half[0]) ** 2 + (dy / half[1]) ** 2
        depth = 0.7 * half[0] * np.clip(1.0 - r2, 0.0, 1.0) ** 0.75
        iod = self.identity.iod_px
        nose = lm[NOSE_TIP[0]]
        d2 = (xs - nose[0]) ** 2 + (ys - nose[1]) ** 2
        depth += 0.35 * iod * np.exp(-d2 / (2 * (0.2 * iod) ** 2))
        fade = smoothstep((1.25 - np.sqrt(r2)) / 0.3)  # 1 inside the face, 0 past its outline
        self._x = (dx * fade).astype(np.float32)
        self._y = (dy * fade).astype(np.float32)
        self._z = (depth * fade).astype(np.float32)

    def rotation(self, yaw_deg: float, pitch_deg: float) -> np.ndarray:
        """Forward displacement (256, 256, 2) of turning the head by yaw / pitch degrees."""
        a, b = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
        out = np.empty((IDENTITY_SIZE, IDENTITY_SIZE, 2), np.float32)
        out[..., 0] = self._x * np.float32(np.cos(a) - 1.0) + self._z * np.float32(np.sin(a))
        out[..., 1] = self._y * np.float32(np.cos(b) - 1.0) + self._z * np.float32(np.sin(b))
        return out

    def cavity(self, face: np.ndarray, jaw_px: float) -> np.ndarray:
        """Darken the gap the talking jaw opened (``jaw_px``: this frame's jaw amount): the
        pixels below the lip seam whose source lies above it. ``face`` is the remapped image
        (uint8 BGR); returns a new image."""
        below = self._rows - self._seam_y
        moved = jaw_px * self.jaw[..., 1]
        gap = np.clip(below + 0.5, 0.0, 1.0) * np.clip(moved - below + 0.5, 0.0, 1.0)
        alpha = (gap * np.sqrt(self._taper) * np.float32(0.85))[..., None]
        if not alpha.any():
            return face
        inside = np.array([38.0, 28.0, 70.0], np.float32)  # dark red-brown, BGR
        out = face.astype(np.float32) * (1.0 - alpha) + inside * alpha
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def motion_blur(image: np.ndarray, velocity: tuple[float, float], exposure: float) -> np.ndarray:
    """Blur along the image motion of one frame interval (px per frame) for the share of it the
    shutter was open; below a pixel of travel the image is returned unchanged."""
    import cv2

    travel = np.hypot(*velocity) * exposure
    if travel < 1.0:
        return image
    size = int(min(2 * np.ceil(travel / 2) + 1, 15))
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    ux, uy = velocity[0] / np.hypot(*velocity), velocity[1] / np.hypot(*velocity)
    for t in np.linspace(-travel / 2, travel / 2, 2 * size):
        x, y = round(float(c + t * ux)), round(float(c + t * uy))
        if 0 <= x < size and 0 <= y < size:
            kernel[y, x] = 1.0
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT101)


def soft_focus(image: np.ndarray, scale: float) -> np.ndarray:
    """A soft lens or a low-resolution sensor: down to ``scale`` and back up."""
    import cv2

    if scale >= 0.999:
        return image
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(int(w * scale), 8), max(int(h * scale), 8)),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
