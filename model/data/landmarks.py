"""FaceMesh (468-point) landmark groups, named once for the generator and the geometry channel,
and landmarks mapped from a frame into its aligned crop.

"L"/"R" = image left/right (the subject's right/left on a frontal, non-mirrored face).
"""

from __future__ import annotations

import numpy as np

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

# Points that move little with expressions: used to remove head motion (a similarity fit). The
# face outline is its upper part (temples to forehead): the jaw line moves with the mouth.
NOSE_BRIDGE = (6, 168, 197, 195, 5)
FACE_OUTLINE_UPPER = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 109, 67, 103, 54, 21,
                      162, 127, 234, 93)
RIGID = EYE_CORNERS + NOSE_BRIDGE + NOSE_TIP + FACE_OUTLINE_UPPER


def crop_landmarks(landmarks: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Frame-pixel landmarks (K, 2) -> crop-pixel landmarks through the (2, 3) alignment."""
    return (landmarks @ transform[:, :2].T + transform[:, 2]).astype(np.float32)
