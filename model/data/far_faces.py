"""Faces too small in the frame for FaceMesh's own detector.

FaceMesh (mediapipe 0.10.14's legacy solution, what :class:`~.align.FaceAligner` runs) acquires a
face only with mediapipe's short-range face detector, a 128x128 model meant for faces close to
the camera, and then follows it from its own landmarks. A face that fills less than about a fifth
of the frame's width is never acquired. Measured with a shipped face photo pasted into a grey
frame (a probe; tests/test_far_faces.py checks the first case): FaceMesh finds nothing at an
inter-ocular distance of about 70 px in a 1280x720 frame (it does from about 90), a person about
1.5 m from a 720p webcam, nor at 95 px in 1920x1080 (it does from about 120); it found no face
in any frame of the suite clip ``einstein-30fps-720p`` (a black-and-white face under a colour
cast, 127 px apart; docs/SUITE.md has the probe).

:class:`FarFaceFinder` finds such faces with the full-range detector (``model_selection=1``, for
faces up to about 5 m away), which sees them on the whole frame, and runs a second FaceMesh on a
square crop of :data:`CROP_FACTOR` times the detector's box, where the face fills two thirds of
the input, as the short-range model wants; the landmarks are moved back into the frame by the
crop's offset. FaceMesh follows the face inside the crop from frame to frame, and the crop
follows the face: it moves by whole pixels, and only once the face has moved or grown by
:data:`FOLLOW_SHIFT` of it (a face near the crop's edge is cut off and its landmarks drift;
a crop that moved on every frame would resample a still face differently on every frame).
The aligner runs FaceMesh on the whole frame first on every frame and asks the finder only where
that finds no face: every frame FaceMesh finds a face in is aligned byte for byte as without the
finder (tested), and the finder's crop is dropped on such a frame. (A first version skipped
FaceMesh on the whole frame while the finder's crop held the face; after one missed frame it
then aligned the rest of a clip from the crop, and on the suite's clips with the person farther
away that moved the network's score on clips FaceMesh found in every other frame by up to 21
points.)

Cost: nothing while FaceMesh finds the face on the whole frame. While no face is in view at all,
the full-range detector (about 4 ms a call here) runs on every :data:`RETRY_EVERY`-th frame only.
On a face only the finder sees, FaceMesh on the whole frame still runs first (its detector, about
2 ms), then FaceMesh on the crop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .facemesh import ResettableFaceMesh, landmarks_to_pixels

CROP_FACTOR = 1.5
"""The side of the square crop FaceMesh runs on, in units of the detector's (longer) box side:
the face fills about two thirds of it (the probe: the short-range model finds the einstein face
at 0.66-0.79 on crops of 1.2-1.5 times the box, on 1 of 8 at 3 times)."""
FOLLOW_SHIFT = 0.08
"""The crop moves once the face's landmark centre has moved this fraction of its side since the
crop was placed, and is resized once the face's size has changed by four times as much."""
RETRY_EVERY = 6
"""While neither FaceMesh nor the full-range detector finds a face, the detector runs on every
N-th frame only (a face coming into view is found within N frames, 0.1 s at 60 FPS)."""


class FarFaceFinder:
    """The full-range detector plus FaceMesh on a crop around its face. Not thread-safe."""

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        crop_factor: float = CROP_FACTOR,
        retry_every: int = RETRY_EVERY,
    ) -> None:
        if crop_factor < 1.0:
            raise ValueError(f"crop_factor must be >= 1, got {crop_factor}")
        if retry_every < 1:
            raise ValueError(f"retry_every must be >= 1, got {retry_every}")
        import mediapipe as mp

        self.crop_factor = float(crop_factor)
        self.retry_every = int(retry_every)
        self._detector: Any = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=float(min_detection_confidence)
        )
        self._mesh = ResettableFaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )
        self._roi: tuple[int, int, int] | None = None  # crop's left, top and side, frame pixels
        self._anchor = np.zeros(3)  # the face's landmark centre and size when the crop was placed
        self._wait = 0  # frames to skip before the detector runs again

    def drop(self) -> None:
        """Let go of the crop (FaceMesh found the face on the whole frame)."""
        self._roi = None
        self._wait = 0

    def reset(self) -> None:
        """Forget the face, and FaceMesh's tracking state with it, so that what it finds in a
        video does not depend on the videos before it."""
        self.drop()
        self._mesh.reset()

    def warm_up(self) -> None:
        self._detector.process(np.zeros((64, 64, 3), np.uint8))
        self._mesh.warm_up()

    def follow(self, rgb: np.ndarray) -> np.ndarray | None:
        """The face in the held crop, (468, 2) frame pixels; None (and the crop dropped) when
        FaceMesh loses it there even after looking again (its own detector, on the crop)."""
        if self._roi is None:
            return None
        landmarks = self._look(rgb)
        if landmarks is None:
            self._roi = None
        else:
            self._keep_up(landmarks)
        return landmarks

    def _look(self, rgb: np.ndarray) -> np.ndarray | None:
        """FaceMesh on the held crop, twice if need be: when it loses a track (or follows one
        from an earlier crop), the second call runs its own detector on this crop."""
        for _ in range(2):
            landmarks = self._mesh_in_roi(rgb)
            if landmarks is not None:
                return landmarks
        return None

    def _keep_up(self, landmarks: np.ndarray) -> None:
        """Move (and resize) the crop with the face, once it has moved far enough."""
        assert self._roi is not None
        x0, y0, side = self._roi
        now = _centre_and_size(landmarks)
        moved = np.abs(now[:2] - self._anchor[:2]).max() > FOLLOW_SHIFT * side
        grown = abs(now[2] / self._anchor[2] - 1.0) > 4 * FOLLOW_SHIFT
        if not (moved or grown):
            return
        new_side = max(16, round(side * now[2] / self._anchor[2]))
        # the face keeps the place in the crop it had when the crop was placed
        place = (self._anchor[:2] - np.array([x0, y0])) * (new_side / side)
        nx, ny = np.round(now[:2] - place).astype(int)
        self._roi = int(nx), int(ny), new_side
        self._anchor = now

    def acquire(self, rgb: np.ndarray, near: np.ndarray | None) -> np.ndarray | None:
        """Look for a face with the full-range detector (rate-limited while none is found) and
        FaceMesh on a crop around the detection closest to ``near`` (frame pixels; None: the
        best-scored one). Returns its (468, 2) frame-pixel landmarks, or None."""
        if self._wait > 0:
            self._wait -= 1
            return None
        self._roi = self._detect(rgb, near)
        landmarks = None if self._roi is None else self._look(rgb)
        if landmarks is None:
            self._roi = None
            self._wait = self.retry_every - 1
        else:
            self._anchor = _centre_and_size(landmarks)
        return landmarks

    def _detect(self, rgb: np.ndarray, near: np.ndarray | None) -> tuple[int, int, int] | None:
        h, w = rgb.shape[:2]
        boxes = []
        for det in self._detector.process(rgb).detections or []:
            b = det.location_data.relative_bounding_box
            centre = np.array([(b.xmin + b.width / 2) * w, (b.ymin + b.height / 2) * h])
            boxes.append((centre, max(b.width * w, b.height * h), float(det.score[0])))
        if not boxes:
            return None
        if near is None:
            centre, side, _ = max(boxes, key=lambda box: box[2])
        else:
            centre, side, _ = min(boxes, key=lambda box: float(np.linalg.norm(box[0] - near)))
        crop = max(16, round(self.crop_factor * side))
        return round(centre[0] - crop / 2), round(centre[1] - crop / 2), crop

    def _mesh_in_roi(self, rgb: np.ndarray) -> np.ndarray | None:
        assert self._roi is not None
        x0, y0, side = self._roi
        crop = square_crop(rgb, x0, y0, side)
        faces = self._mesh.process(crop).multi_face_landmarks
        if not faces:
            return None
        return landmarks_to_pixels(faces[0], side, side) + np.array([x0, y0], np.float32)

    def close(self) -> None:
        for graph in (self._detector, self._mesh):
            graph.close()


def _centre_and_size(landmarks: np.ndarray) -> np.ndarray:
    """(x, y, size): the landmarks' bounding-box centre and longer side, frame pixels."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    return np.array([*(lo + hi) / 2, max(float((hi - lo).max()), 1.0)])


def square_crop(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` square of ``image`` whose top-left corner is (x0, y0), black where
    it reaches past the frame (a face at the frame's edge keeps its place in the crop)."""
    h, w = image.shape[:2]
    out = np.zeros((side, side, image.shape[2]), image.dtype)
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + side, w), min(y0 + side, h)
    if xa < xb and ya < yb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = image[ya:yb, xa:xb]
    return out
