"""FaceMesh's landmarks as numpy arrays, read once from the message's wire bytes, and a FaceMesh
graph whose tracking state can be forgotten.

The aligner (align.py) and the far-face finder (far_faces.py) both read FaceMesh results here.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

N_LANDMARKS = 468

# One serialized NormalizedLandmark entry of a NormalizedLandmarkList when only x, y and z are set
# (what FaceMesh returns): the entry's tag and length, then three tagged little-endian float32s.
_LANDMARK_ENTRY = np.dtype(
    [
        ("entry", "u1", (2,)),
        ("x_tag", "u1"),
        ("x", "<f4"),
        ("y_tag", "u1"),
        ("y", "<f4"),
        ("z_tag", "u1"),
        ("z", "<f4"),
    ]
)
_ENTRY_TAGS = (0x0A, _LANDMARK_ENTRY.itemsize - 2, 0x0D, 0x15, 0x1D)


def landmarks_to_pixels(face: Any, width: int, height: int) -> np.ndarray:
    """(468, 2) float32 pixel coordinates of a FaceMesh ``NormalizedLandmarkList``.

    Reads the message's wire bytes as a numpy record array (one copy, no Python loop over 468
    landmarks): the values are the message's own float32s, scaled in float64 and rounded to
    float32 exactly as ``p.x * width`` would be. A message laid out otherwise (a field such as
    visibility set) is read landmark by landmark."""
    raw = face.SerializeToString()
    if len(raw) >= N_LANDMARKS * _LANDMARK_ENTRY.itemsize:
        rec = np.frombuffer(raw, _LANDMARK_ENTRY, count=N_LANDMARKS)
        tags = (rec["entry"][:, 0], rec["entry"][:, 1], rec["x_tag"], rec["y_tag"], rec["z_tag"])
        if all((t == want).all() for t, want in zip(tags, _ENTRY_TAGS, strict=True)):
            out = np.empty((N_LANDMARKS, 2), np.float32)
            out[:, 0] = rec["x"].astype(np.float64) * width
            out[:, 1] = rec["y"].astype(np.float64) * height
            return out
    return np.array([(p.x * width, p.y * height) for p in face.landmark[:N_LANDMARKS]], np.float32)


class ResettableFaceMesh:
    """mediapipe's legacy FaceMesh (``mp.solutions.face_mesh.FaceMesh(**args)``) whose
    :meth:`reset` forgets what it tracked: in video mode the graph keeps the face region of the
    last frame between calls, so a reset makes a new graph once the old one has seen a frame.
    :meth:`warm_up` starts the graph on a blank frame without counting as having seen one."""

    def __init__(self, **args: Any) -> None:
        import mediapipe as mp

        self._new = functools.partial(mp.solutions.face_mesh.FaceMesh, **args)
        self._graph: Any = self._new()
        self._used = False

    def process(self, rgb: np.ndarray) -> Any:
        self._used = True
        return self._graph.process(rgb)

    def warm_up(self) -> None:
        self._graph.process(np.zeros((64, 64, 3), np.uint8))

    def reset(self) -> None:
        if self._used:
            self._graph.close()
            self._graph = self._new()
            self._used = False

    def close(self) -> None:
        self._graph.close()
