"""A still's face, deformed and turned, drawn into a frame.

Per frame: the mesh moves by the expression and distractor fields (still pixels), the whole
extended mesh (mesh, opening centres, rings) turns in 3D about the face centre (yaw, pitch, roll
from FaceMesh's depth), is scaled and placed in the frame (orthographic projection), and the
still is drawn through it by the piecewise-affine renderer in painter's order (rings first,
then mesh triangles from far to near). The mouth's fan triangles darken as the lips part
beyond their rest (the mouth cavity), which the still cannot show otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mesh import N_MESH, PiecewiseAffine, extend, topology
from .regions import FieldBank
from .stills import Still

FEATHER = 0.08
"""Width of the still's alpha ramp at its border, as a fraction of its size."""
HEAD_RX, HEAD_RY, HEAD_DROP, HEAD_SOFT = 0.85, 1.0, 0.25, 0.3
"""The person's ellipse in a still: radii and downward shift (fractions of the mesh's width
and height) and the soft part of its edge (fraction of the radius)."""
MOUTH_DARK = 0.7
"""Largest darkening of an open mouth's fan triangle."""
MOUTH_DARK_OPENING = 0.1
"""Opening of the lips beyond rest (IOD) at which the mouth cavity is fully dark."""


@dataclass(frozen=True)
class Pose:
    """Head pose in a frame: degrees, still-pixels -> frame-pixels scale, face centre."""

    yaw: float
    pitch: float
    roll: float
    scale: float
    x: float
    y: float


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (degrees): roll about the view axis, yaw about the vertical, pitch about the
    horizontal (image axes: x right, y down, z away from the camera)."""
    a, b, c = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def head_alpha(h: int, w: int, vertices: np.ndarray, feather: float = FEATHER) -> np.ndarray:
    """(h, w) alpha of the person in a still: an ellipse around head, hair and neck (from the
    mesh's extent), with soft edges, and 0 at the still's own border."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lo, hi = vertices[:, :2].min(axis=0), vertices[:, :2].max(axis=0)
    (ex, ey), (cx, cy) = hi - lo, (lo + hi) / 2
    r = np.hypot((xx - cx) / (HEAD_RX * ex), (yy - (cy + HEAD_DROP * ey)) / (HEAD_RY * ey))
    ellipse = np.clip((1.0 - r) / HEAD_SOFT, 0.0, 1.0)
    ramp = feather * min(h, w)
    d = np.minimum(np.minimum(xx + 0.5, w - 0.5 - xx), np.minimum(yy + 0.5, h - 0.5 - yy))
    t = np.clip(d / ramp, 0.0, 1.0) * ellipse
    return t * t * (3 - 2 * t)


class FaceRenderer:
    """One still, ready to be drawn any number of times."""

    def __init__(self, still: Still) -> None:
        self.still = still
        self.topo = topology()
        self.bank = FieldBank(still.vertices)
        self.rest = still.vertices
        self.rest_ext = extend(self.rest, self.rest, self.topo)
        self.centre = self.rest.mean(axis=0)
        h, w = still.image.shape[:2]
        rgba = np.dstack([still.image.astype(np.float32), head_alpha(h, w, self.rest)])
        self.warp = PiecewiseAffine(rgba, self.rest_ext[:, :2], self.topo.triangles)
        tris = self.topo.triangles
        self._band = np.flatnonzero(self.topo.band)
        self._face = np.flatnonzero(~self.topo.band)
        mouth_centre = N_MESH + list(self.topo.openings).index("mouth")
        self._mouth = np.flatnonzero(tris[:, 0] == mouth_centre)
        inner = set(self.topo.openings["mouth"].tolist())
        reg = self.bank.regions
        self._inner_upper = np.array(sorted(inner & set(np.concatenate(
            [reg["lip_upper_l"], reg["lip_upper_r"]]).tolist())))
        self._inner_lower = np.array(sorted(inner & set(np.concatenate(
            [reg["lip_lower_l"], reg["lip_lower_r"]]).tolist())))

    def mouth_opening(self, field_units: np.ndarray) -> float:
        """How far (IOD) a face-frame field parts the inner lips beyond their rest."""
        return float(field_units[self._inner_lower, 1].mean()
                     - field_units[self._inner_upper, 1].mean())

    @property
    def iod_px(self) -> float:
        """Inter-ocular distance of the still, pixels."""
        return self.bank.frame.iod

    def project(self, moved: np.ndarray, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """Extended vertices of a moved mesh -> (frame xy (P, 2), depth (P,))."""
        ext = extend(moved, self.rest, self.topo)
        q = (ext - self.centre) @ rotation(pose.yaw, pose.pitch, pose.roll).T
        return q[:, :2] * pose.scale + [pose.x, pose.y], q[:, 2]

    def draw(
        self, canvas: np.ndarray, field_units: np.ndarray, pose: Pose
    ) -> None:
        """Composite the face, moved by ``field_units`` (468, 3; face-frame units), into
        ``canvas`` (float32 (H, W, 3) BGR, in place)."""
        moved = self.rest + self.bank.frame.to_pixels(field_units)
        xy, depth = self.project(moved, pose)
        tris = self.topo.triangles
        far_first = self._face[np.argsort(-depth[tris[self._face]].mean(axis=1), kind="stable")]
        order = np.concatenate([self._band, far_first])
        gain = np.ones(len(tris), np.float32)
        dark = np.clip(self.mouth_opening(field_units) / MOUTH_DARK_OPENING, 0.0, 1.0)
        gain[self._mouth] = 1.0 - MOUTH_DARK * dark
        out = self.warp.render(xy, order, gain, canvas.shape[:2])
        if out is None:
            return
        (x0, y0), patch = out
        h, w = patch.shape[:2]
        region = canvas[y0 : y0 + h, x0 : x0 + w]
        alpha = patch[..., 3:4]
        region *= 1.0 - alpha
        region += patch[..., :3] * alpha
