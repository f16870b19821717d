"""The suite's six faces and their 3D FaceMesh meshes.

The suite animates exactly these faces, none of which any training video uses:

- the three held-out test stills of the training generator's folder, read there by path
  (``model/data/faces/astronaut.jpg``, ``f13-anc.jpg``, ``wolfgang.jpg``): no training video
  shows them, and reading the files keeps this package free of the generator's identity code;
- three faces shipped in ``faces/`` beside this module (provenance in ``faces/NOTICE.md``,
  written by ``scripts/fetch_suite_faces.py``): ``grace_hopper``, ``obama``, ``einstein``.

A still's mesh is mediapipe FaceMesh's 468 landmarks in static-image mode, in still pixels;
``z`` is FaceMesh's depth in the same pixel scale (smaller = nearer the camera), which is what
lets the renderer turn the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

FACES_DIR = Path(__file__).resolve().parent / "faces"
TEST_FACES_DIR = Path(__file__).resolve().parents[1] / "data" / "faces"

STILL_FILES: dict[str, Path] = {
    "astronaut": TEST_FACES_DIR / "astronaut.jpg",
    "f13-anc": TEST_FACES_DIR / "f13-anc.jpg",
    "wolfgang": TEST_FACES_DIR / "wolfgang.jpg",
    "grace_hopper": FACES_DIR / "grace_hopper.jpg",
    "obama": FACES_DIR / "obama.jpg",
    "einstein": FACES_DIR / "einstein.jpg",
}
N_LANDMARKS = 468


class StillError(RuntimeError):
    """A suite face is missing or FaceMesh finds no face in it."""


@dataclass(frozen=True)
class Still:
    """A face image and its mesh: ``image`` (H, W, 3) uint8 BGR, ``vertices`` (468, 3) float64
    (x, y in pixels; z in the same scale, smaller = nearer)."""

    name: str
    image: np.ndarray
    vertices: np.ndarray


def face_mesh_3d(image_bgr: np.ndarray) -> np.ndarray | None:
    """FaceMesh's 468 landmarks (x, y, z) in pixels of the largest face, or None."""
    import cv2
    import mediapipe as mp

    h, w = image_bgr.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         refine_landmarks=False) as mesh:
        result = mesh.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    if not result.multi_face_landmarks:
        return None
    pts = result.multi_face_landmarks[0].landmark[:N_LANDMARKS]
    return np.array([[p.x * w, p.y * h, p.z * w] for p in pts], np.float64)


@lru_cache(maxsize=8)
def load_still(name: str) -> Still:
    """One of :data:`STILL_FILES`, read and meshed (cached per process)."""
    import cv2

    path = STILL_FILES.get(name)
    if path is None:
        raise StillError(f"unknown suite face {name!r}; one of {', '.join(STILL_FILES)}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise StillError(f"cannot read the suite face {path}")
    vertices = face_mesh_3d(image)
    if vertices is None:
        raise StillError(f"FaceMesh finds no face in {path}")
    return Still(name, image, vertices)
