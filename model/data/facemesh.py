"""FaceMesh's landmarks as numpy arrays: read once from the message's wire bytes.

The aligner (align.py) and the far-face finder (far_faces.py) both read FaceMesh results here.
"""

from __future__ import annotations

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
