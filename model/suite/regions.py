"""Face regions and expression templates of the suite, defined on the mesh in its own terms.

Coordinates: a still's *face frame* puts the origin between the eye centres (means of
mediapipe's eye contours), x along the eyes (image right), y down, and measures in inter-ocular
distances (IOD). Regions are sets of mesh vertices chosen in that frame: brows, lids and lips
from mediapipe's own connection sets, split by position; cheeks, nose wings, nose root and chin
by boxes in the face frame. Every region is sided: ``_l`` (image left, x <= 0) and ``_r``.

A template is a list of handles ``(region, (lateral, down, depth), sigma)``: the region's
vertices move by the vector (lateral = away from the midline), and the motion spreads over the
mesh with a Gaussian of the *geodesic* distance along mesh edges (so it never jumps across the
eye or mouth openings: an upper lid handle leaves the lower lid alone). Fields are normalised
so that their largest vertex displacement at full strength on both sides is 1 IOD.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .mesh import N_MESH, mesh_edges

Handle = tuple[str, tuple[float, float, float], float]

TEMPLATES: dict[str, tuple[Handle, ...]] = {
    "brow_raise_inner": (("brow_inner", (0.0, -1.0, 0.0), 0.14),),
    "brow_raise_outer": (("brow_outer", (0.0, -1.0, 0.0), 0.14),),
    "brow_lower": (("brow_inner", (-0.5, 0.8, 0.0), 0.14), ("brow_outer", (-0.2, 0.6, 0.0), 0.12)),
    "lid_raise": (("upper_lid", (0.0, -0.7, 0.0), 0.06),),
    "lid_tighten": (("lower_lid", (0.0, -0.8, 0.0), 0.07), ("upper_lid", (0.0, 0.3, 0.0), 0.05)),
    "cheek_raise": (("cheek", (0.1, -1.0, -0.3), 0.18), ("lower_lid", (0.0, -0.4, 0.0), 0.06)),
    "nose_wrinkle": (("nose_wing", (0.1, -0.9, 0.0), 0.1), ("nose_root", (0.0, -0.4, 0.0), 0.08)),
    "upper_lip_raise": (("lip_upper", (0.0, -0.9, 0.0), 0.09),
                        ("nose_wing", (0.05, -0.3, 0.0), 0.08)),
    "corner_pull": (("corner", (0.75, -0.65, 0.1), 0.12),),
    "corner_depress": (("corner", (0.2, 0.9, 0.0), 0.12),),
    "dimpler": (("corner", (-0.5, 0.0, 0.4), 0.08),),
    "lip_stretch": (("corner", (1.0, 0.2, 0.0), 0.12),),
    "lip_press": (("lip_upper", (0.0, 0.6, 0.0), 0.05), ("lip_lower", (0.0, -0.6, 0.0), 0.05)),
    "pucker": (("corner", (-0.8, 0.0, -0.3), 0.1), ("lip_upper", (0.0, 0.0, -0.5), 0.06)),
    "chin_raise": (("chin", (0.0, -0.8, 0.0), 0.15), ("lip_lower", (0.0, -0.5, 0.0), 0.06)),
    "jaw_drop": (("jaw", (0.0, 1.0, 0.15), 0.3),),
}
"""Expression templates (action-unit-like, in this module's own terms)."""
BLINK_SIGMA = 0.06


@dataclass(frozen=True)
class FaceFrame:
    """Still pixels <-> face frame: ``norm = R @ (xy - origin) / iod``."""

    origin: np.ndarray  # (2,)
    rotation: np.ndarray  # (2, 2)
    iod: float

    def to_face(self, v: np.ndarray) -> np.ndarray:
        """(N, 3) still pixels -> (N, 3) face-frame units (z divided by the IOD too)."""
        xy = (v[:, :2] - self.origin) @ self.rotation.T / self.iod
        return np.column_stack([xy, v[:, 2] / self.iod])

    def to_pixels(self, d: np.ndarray) -> np.ndarray:
        """(N, 3) displacements in face-frame units -> still pixels."""
        xy = d[:, :2] @ self.rotation * self.iod
        return np.column_stack([xy, d[:, 2] * self.iod])


def _vertex_set(connections: frozenset) -> np.ndarray:
    return np.array(sorted({i for e in connections for i in e}), np.int64)


def face_frame(vertices: np.ndarray) -> FaceFrame:
    from mediapipe.python.solutions import face_mesh_connections as fm

    right = vertices[_vertex_set(fm.FACEMESH_LEFT_EYE), :2].mean(axis=0)  # subject's left
    left = vertices[_vertex_set(fm.FACEMESH_RIGHT_EYE), :2].mean(axis=0)
    axis = right - left
    iod = float(np.linalg.norm(axis))
    c, s = axis / iod
    return FaceFrame((left + right) / 2, np.array([[c, s], [-s, c]]), iod)


def _split(ids: np.ndarray, p: np.ndarray, name: str, out: dict[str, np.ndarray]) -> None:
    """Region ``name`` -> ``name_l`` / ``name_r`` by the side of the face (x <= 0: left)."""
    out[name + "_l"] = ids[p[ids, 0] <= 0.02]
    out[name + "_r"] = ids[p[ids, 0] >= -0.02]


def lip_arcs(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) lip vertices: each of mediapipe's two lip contours (outer, inner) cut at
    its leftmost and rightmost vertex; the arc through the top midline vertex (0 outer, 13
    inner) is the upper lip. A position test would fail on a smile, whose corners rise above
    the lower lip's inner edge."""
    from mediapipe.python.solutions import face_mesh_connections as fm

    nxt: dict[int, list[int]] = {}
    for a, b in fm.FACEMESH_LIPS:
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    upper: list[int] = []
    lower: list[int] = []
    for top in (0, 13):
        loop, prev, cur = [top], -1, top
        while True:
            step = next(v for v in nxt[cur] if v != prev)
            if step == top:
                break
            loop.append(step)
            prev, cur = cur, step
        xs = p[loop, 0]
        i, j = sorted((int(np.argmin(xs)), int(np.argmax(xs))))
        arc = loop[i + 1 : j]
        rest = loop[j + 1 :] + loop[:i]
        up, down = (arc, rest) if top in arc else (rest, arc)
        upper += up
        lower += down
    return np.array(sorted(upper), np.int64), np.array(sorted(lower), np.int64)


def regions(p: np.ndarray) -> dict[str, np.ndarray]:
    """Sided regions of a mesh given in face-frame units (``FaceFrame.to_face``)."""
    from mediapipe.python.solutions import face_mesh_connections as fm

    out: dict[str, np.ndarray] = {}
    x, y = p[:, 0], p[:, 1]
    allv = np.arange(N_MESH)
    brows = np.concatenate([_vertex_set(fm.FACEMESH_LEFT_EYEBROW),
                            _vertex_set(fm.FACEMESH_RIGHT_EYEBROW)])
    mid = np.median(np.abs(x[brows]))
    _split(brows[np.abs(x[brows]) < mid], p, "brow_inner", out)
    _split(brows[np.abs(x[brows]) >= mid], p, "brow_outer", out)
    for eye_set in (fm.FACEMESH_LEFT_EYE, fm.FACEMESH_RIGHT_EYE):
        eye = _vertex_set(eye_set)
        a, b = eye[np.argmin(x[eye])], eye[np.argmax(x[eye])]
        line = y[a] + (x[eye] - x[a]) * (y[b] - y[a]) / (x[b] - x[a])
        side = "_l" if x[eye].mean() < 0 else "_r"
        out["upper_lid" + side] = eye[y[eye] < line - 1e-6]
        out["lower_lid" + side] = eye[y[eye] > line + 1e-6]
    lips = _vertex_set(fm.FACEMESH_LIPS)
    upper, lower = lip_arcs(p)
    _split(upper, p, "lip_upper", out)
    _split(lower, p, "lip_lower", out)
    a, b = lips[np.argmin(x[lips])], lips[np.argmax(x[lips])]
    mouth_y = (y[a] + y[b]) / 2
    out["corner_l"] = lips[np.hypot(x[lips] - x[a], y[lips] - y[a]) < 0.08]
    out["corner_r"] = lips[np.hypot(x[lips] - x[b], y[lips] - y[b]) < 0.08]
    boxes = {
        "cheek": (0.45, 0.85, 0.3, 0.75),  # |x| from, to; y from, to
        "nose_wing": (0.1, 0.28, 0.45, 0.72),
        "nose_root": (0.0, 0.12, -0.05, 0.25),
        "chin": (0.0, 0.3, mouth_y + 0.32, mouth_y + 0.6),
    }
    for name, (ax0, ax1, y0, y1) in boxes.items():
        inside = allv[(np.abs(x) >= ax0) & (np.abs(x) <= ax1) & (y >= y0) & (y <= y1)]
        _split(inside, p, name, out)
    for s in ("_l", "_r"):
        out["jaw" + s] = np.union1d(out["lip_lower" + s], out["chin" + s])
    empty = [k for k, v in out.items() if len(v) == 0]
    if empty:
        raise ValueError(f"empty face regions: {empty}")
    return out


def geodesic(p: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shortest distance along mesh edges from the nearest vertex of ``sources`` (face-frame
    units), and which source that is, per vertex."""
    edges = mesh_edges()
    lengths = np.linalg.norm(p[edges[:, 0]] - p[edges[:, 1]], axis=1)
    adj: list[list[tuple[int, float]]] = [[] for _ in range(N_MESH)]
    for (a, b), w in zip(edges.tolist(), lengths.tolist(), strict=True):
        adj[a].append((b, w))
        adj[b].append((a, w))
    dist = np.full(N_MESH, np.inf)
    nearest = np.full(N_MESH, -1, np.int64)
    heap = [(0.0, int(s), int(s)) for s in sources]
    dist[sources] = 0.0
    nearest[sources] = sources
    while heap:
        d, v, src = heapq.heappop(heap)
        if d > dist[v]:
            continue
        for u, w in adj[v]:
            if d + w < dist[u]:
                dist[u], nearest[u] = d + w, src
                heapq.heappush(heap, (dist[u], u, src))
    return dist, nearest


def below_mouth(p: np.ndarray, reg: dict[str, np.ndarray]) -> np.ndarray:
    """Per-vertex weight of the lower face (the jaw's zone): 1 below the line of the mouth
    corners, 0 above it, the upper lip always 0."""
    corners = np.concatenate([reg["corner_l"], reg["corner_r"]])
    line = p[corners, 1].mean()
    w = np.clip((p[:, 1] - line + 0.04) / 0.1, 0.0, 1.0)
    w[np.union1d(reg["lip_upper_l"], reg["lip_upper_r"])] = 0.0
    w[np.union1d(reg["lip_lower_l"], reg["lip_lower_r"])] = 1.0
    return w


class FieldBank:
    """Per-still displacement fields of every template and side, in face-frame units."""

    def __init__(self, vertices: np.ndarray) -> None:
        self.frame = face_frame(vertices)
        self.p = self.frame.to_face(vertices)
        self.regions = regions(self.p)
        self._zone = below_mouth(self.p, self.regions)

    @lru_cache(maxsize=64)  # noqa: B019 (one bank per renderer; fields are reused every frame)
    def side_field(self, template: str, side: str) -> np.ndarray:
        """(468, 3) field of one side (``"_l"`` / ``"_r"``) of a template, unnormalised."""
        sign = -1.0 if side == "_l" else 1.0
        field = np.zeros((N_MESH, 3))
        for region, (lat, down, depth), sigma in TEMPLATES[template]:
            ids = self.regions[region + side]
            w = np.exp(-(geodesic(self.p, ids)[0] ** 2) / (2 * sigma**2))
            if region == "jaw":
                w = w * self._zone
            field += w[:, None] * np.array([sign * lat, down, depth])
        return field

    @lru_cache(maxsize=32)  # noqa: B019
    def scale(self, template: str) -> float:
        both = self.side_field(template, "_l") + self.side_field(template, "_r")
        return float(np.linalg.norm(both, axis=1).max())

    def field(self, template: str, gain_l: float, gain_r: float) -> np.ndarray:
        """(468, 3) template field with per-side gains; 1 IOD at full strength (both gains 1)."""
        s = self.scale(template)
        return (gain_l * self.side_field(template, "_l")
                + gain_r * self.side_field(template, "_r")) / s

    def blink_field(self) -> np.ndarray:
        """(468, 3) field that closes both eyes at strength 1: every upper lid vertex moves
        (in the image plane) to the lower lid vertex below it, and the lid skin around follows
        the nearest lid vertex with a narrow geodesic falloff."""
        field = np.zeros((N_MESH, 3))
        for side in ("_l", "_r"):
            upper, lower = self.regions["upper_lid" + side], self.regions["lower_lid" + side]
            move = np.zeros((N_MESH, 3))
            for u in upper:
                v = lower[np.argmin(np.abs(self.p[lower, 0] - self.p[u, 0]))]
                move[u, :2] = 0.95 * (self.p[v, :2] - self.p[u, :2])
            dist, nearest = geodesic(self.p, upper)
            w = np.exp(-(dist**2) / (2 * BLINK_SIGMA**2))
            field += w[:, None] * move[nearest]
        return field
