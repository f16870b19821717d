"""FaceMesh's triangulation, closed and framed, and a piecewise-affine renderer over it.

The deformation model of the suite: every triangle of mediapipe's ``FACEMESH_TESSELATION``
carries the still's texture by the affine map between its rest and its moved corners. The
tesselation has four boundary loops (the face oval, both eye openings, the inner lips). The
openings are closed by fans around a centre vertex (the mean of the loop), so lids and lips can
close over them; the oval is framed by two rings of vertices that move rigidly with the head
(pushed out from the face centre by :data:`RING_SCALES`), so the skin, hair and shoulders around
the face follow the head while the expression moves only the mesh.

Extended vertex array (``Topology``): 468 mesh vertices, one centre per opening, then the rings.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_MESH = 468
RING_SCALES = (1.45, 3.4)
"""Rings around the oval, as multiples of its distance from the face centre: the first holds
the skin and hair next to the face, the second lies outside the still (where alpha is 0)."""
SUBPIXEL_BITS = 4


@dataclass(frozen=True)
class Topology:
    """Triangles over the extended vertex array (module docstring) and how to build it."""

    triangles: np.ndarray  # (K, 3) int
    band: np.ndarray  # (K,) bool: a triangle of the rings (drawn first, behind the face)
    openings: dict[str, np.ndarray]  # "eye_l", "eye_r", "mouth": ordered loops of mesh vertices
    oval: np.ndarray  # ordered loop of the face outline


def _edges() -> set[tuple[int, int]]:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    return {(min(a, b), max(a, b)) for a, b in FACEMESH_TESSELATION}


def mesh_edges() -> np.ndarray:
    """(E, 2) vertex pairs of the tesselation (sorted, unique)."""
    return np.array(sorted(_edges()), np.int64)


def _triangles(edges: set[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The faces of the tesselation: its 3-cliques, less the two that are not faces (the
    cliques all of whose edges already border two other triangles, beside the nostrils)."""
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]})
    uses: dict[tuple[int, int], int] = {}
    for a, b, c in tris:
        for e in ((a, b), (a, c), (b, c)):
            uses[e] = uses.get(e, 0) + 1
    return [t for t in tris
            if not all(uses[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]


def _loops(tris: list[tuple[int, int, int]]) -> list[list[int]]:
    """Ordered boundary loops of a triangle set (edges that border one triangle)."""
    uses: dict[tuple[int, int], int] = {}
    for a, b, c in tris:
        for e in ((a, b), (a, c), (b, c)):
            uses[e] = uses.get(e, 0) + 1
    nxt: dict[int, list[int]] = {}
    for (a, b), n in uses.items():
        if n == 1:
            nxt.setdefault(a, []).append(b)
            nxt.setdefault(b, []).append(a)
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            step = next(v for v in nxt[cur] if v != prev)
            if step == start:
                break
            loop.append(step)
            seen.add(step)
            prev, cur = cur, step
        loops.append(loop)
    return loops


@lru_cache(maxsize=1)
def topology() -> Topology:
    """The closed, framed FaceMesh triangulation (the same for every still)."""
    tris = _triangles(_edges())
    loops = _loops(tris)
    named = {}
    for loop in loops:
        if 10 in loop:
            named["oval"] = loop
        elif 33 in loop:
            named["eye_l"] = loop  # image left
        elif 263 in loop:
            named["eye_r"] = loop
        elif 13 in loop:
            named["mouth"] = loop
    if len(named) != 4 or len(loops) != 4:
        raise RuntimeError(f"unexpected FaceMesh boundary: {len(loops)} loops")
    faces = [list(t) for t in tris]
    band = [False] * len(faces)
    for k, key in enumerate(("eye_l", "eye_r", "mouth")):
        centre, loop = N_MESH + k, named[key]
        faces += [[centre, loop[i], loop[(i + 1) % len(loop)]] for i in range(len(loop))]
        band += [False] * len(loop)
    oval = named["oval"]
    n = len(oval)
    rows = [oval] + [[N_MESH + 3 + r * n + j for j in range(n)] for r in range(len(RING_SCALES))]
    for inner, outer in itertools.pairwise(rows):
        for j in range(n):
            a, b, c, d = inner[j], inner[(j + 1) % n], outer[(j + 1) % n], outer[j]
            faces += [[a, b, c], [a, c, d]]
            band += [True, True]
    return Topology(np.array(faces, np.int64), np.array(band), {k: np.array(named[k])
                    for k in ("eye_l", "eye_r", "mouth")}, np.array(oval))


def extend(vertices: np.ndarray, rest: np.ndarray, topo: Topology) -> np.ndarray:
    """(468, 3) mesh vertices -> the extended array: opening centres from ``vertices``, rings
    from the ``rest`` mesh (they carry no expression)."""
    centres = [vertices[loop].mean(axis=0) for loop in topo.openings.values()]
    oval = rest[topo.oval]
    middle = rest[:N_MESH].mean(axis=0)
    rings = []
    for s in RING_SCALES:
        ring = middle + s * (oval - middle)
        ring[:, 2] = oval[:, 2].mean()
        rings.append(ring)
    return np.concatenate([vertices, np.array(centres), *rings])


def triangle_affines(src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(K, 2, 3) affine maps taking each triangle's ``dst`` corners to its ``src`` corners.
    Degenerate destination triangles (a closed lid) map everything to their first corner."""
    d = np.ones((len(tris), 3, 3))
    d[:, :2, :] = dst[tris].transpose(0, 2, 1)
    s = src[tris].transpose(0, 2, 1)  # (K, 2, 3)
    det = np.linalg.det(d)
    ok = np.abs(det) > 1e-6
    out = np.zeros((len(tris), 2, 3))
    out[ok] = s[ok] @ np.linalg.inv(d[ok])
    out[~ok, :, 2] = s[~ok, :, 0]
    return out


class PiecewiseAffine:
    """Renders a texture (the still, with an alpha channel) through moved triangles.

    ``render`` rasterises the destination triangles in the given order (later ones cover
    earlier ones: painter's order), maps every covered pixel back into the texture by its
    triangle's affine map and samples it bilinearly.
    """

    def __init__(self, texture_rgba: np.ndarray, src_xy: np.ndarray, tris: np.ndarray) -> None:
        self.texture = np.ascontiguousarray(texture_rgba, np.float32)
        self.src = np.asarray(src_xy, np.float64)
        self.tris = np.asarray(tris, np.int64)

    def render(
        self, dst_xy: np.ndarray, order: np.ndarray, gain: np.ndarray, canvas_hw: tuple[int, int]
    ) -> tuple[tuple[int, int], np.ndarray] | None:
        """((x0, y0), patch (h, w, 4) float32 RGBA with colour times ``gain`` per triangle) of
        the region the triangles cover inside a canvas, or None when none of it is inside."""
        import cv2

        h_c, w_c = canvas_hw
        lo = np.floor(dst_xy.min(axis=0)).astype(int)
        hi = np.ceil(dst_xy.max(axis=0)).astype(int) + 1
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], w_c), min(hi[1], h_c)
        if x1 <= x0 or y1 <= y0:
            return None
        ids = np.full((y1 - y0, x1 - x0), -1, np.int32)
        pts = np.round((dst_xy - [x0, y0]) * (1 << SUBPIXEL_BITS)).astype(np.int32)
        for k in order:
            cv2.fillConvexPoly(ids, pts[self.tris[k]], int(k), cv2.LINE_8, SUBPIXEL_BITS)
        affine = triangle_affines(self.src, dst_xy, self.tris)
        affine = np.concatenate([affine, [[[0, 0, -1e4], [0, 0, -1e4]]]]).astype(np.float32)
        gains = np.append(np.asarray(gain, np.float32), 0.0)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        a = affine[ids]  # id -1 picks the last row: a point far outside the texture
        map_x = a[..., 0, 0] * xx + a[..., 0, 1] * yy + a[..., 0, 2]
        map_y = a[..., 1, 0] * xx + a[..., 1, 1] * yy + a[..., 1, 2]
        patch = cv2.remap(self.texture, map_x, map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        patch[..., :3] *= gains[ids][..., None]
        return (x0, y0), patch
