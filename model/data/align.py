"""Face alignment: mediapipe FaceMesh landmarks -> similarity transform -> square RGB crop.

This is the only alignment code in the project. Training data (datasets, synthetic videos) and the
realtime spotter both go through :class:`FaceAligner`, so the model always sees crops made the same
way: a similarity transform (rotation, uniform scale, translation; no shear) maps five stable
landmarks (two eye centres, nose tip, two mouth corners) onto a fixed canonical template. The
template leaves a margin so the whole face, brows to chin, lies inside the square crop.

mediapipe is imported lazily inside :class:`FaceAligner` so that importing this module stays light.
We use the legacy ``mediapipe.solutions.face_mesh`` solution of mediapipe 0.10.14 because its model
is bundled in the wheel and runs offline.

How other faces are looked for is a cost, not a detail. FaceMesh in video mode runs its face
detector on every frame until it tracks ``max_num_faces`` faces, and otherwise only follows the
faces it has from frame to frame. With ``max_faces=2`` and one person in view, that is a detector
run on every frame (measured on the sample clip: 10.9 vs 6.5 ms per frame). With
``count_faces_every_frames=N`` the aligner tracks one face with FaceMesh and counts the faces in
view with mediapipe's (short-range) face detector on every N-th frame only. The tracked face's
landmarks, and so its crops, are the same either way: FaceMesh follows a tracked face from its
previous landmarks, whatever its detector finds (docs/BENCHMARKS.md has the comparison).

Faces too small in the frame for FaceMesh's own detector (less than about a fifth of its width:
a person 1.5 m from a 720p webcam) are found by ``far_faces.FarFaceFinder`` in video mode, on the
frames where FaceMesh finds no face; every frame FaceMesh finds a face in is aligned as without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from .facemesh import N_LANDMARKS, ResettableFaceMesh, landmarks_to_pixels

logger = logging.getLogger(__name__)

# FaceMesh indices of the eye contours. "Left"/"right" here mean *image* left/right for a frontal,
# non-mirrored face (mediapipe's 33 is the subject's right eye outer corner, seen on image left).
EYE_IMAGE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_IMAGE_RIGHT = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
NOSE_TIP = 1
MOUTH_IMAGE_LEFT = 61
MOUTH_IMAGE_RIGHT = 291

# Canonical positions of (eye L, eye R, nose tip, mouth L, mouth R) in a unit square crop.
# Measured on the shipped faces: with the eyes at 37% height, the mouth corners at 64.5% and an
# inter-ocular distance of 30% of the crop, FaceMesh's forehead point lands near 12% height, the
# brows near 26% and the chin near 90% (an open mouth pushes it to ~93%), and the face is centred
# horizontally: brows to chin are inside with a margin, and little background is wasted.
CANONICAL_TEMPLATE_UNIT = np.array(
    [
        [0.348, 0.370],
        [0.652, 0.370],
        [0.500, 0.522],
        [0.376, 0.645],
        [0.624, 0.645],
    ],
    dtype=np.float64,
)


def canonical_template(crop_size: int) -> np.ndarray:
    """Template points (5, 2) in pixel coordinates of a ``crop_size`` square crop."""
    return CANONICAL_TEMPLATE_UNIT * float(crop_size)


_EYE_LEFT_IDX = np.array(EYE_IMAGE_LEFT)
_EYE_RIGHT_IDX = np.array(EYE_IMAGE_RIGHT)


def keypoints_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points (5, 2) from FaceMesh landmarks (468, 2), in template order."""
    if landmarks.shape[0] < N_LANDMARKS or landmarks.shape[1] != 2:
        raise ValueError(f"expected landmarks of shape ({N_LANDMARKS}, 2), got {landmarks.shape}")
    return np.stack(
        [
            landmarks[_EYE_LEFT_IDX].mean(axis=0),
            landmarks[_EYE_RIGHT_IDX].mean(axis=0),
            landmarks[NOSE_TIP],
            landmarks[MOUTH_IMAGE_LEFT],
            landmarks[MOUTH_IMAGE_RIGHT],
        ]
    ).astype(np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2, 3) mapping ``src`` points onto ``dst`` points.

    The RANSAC threshold is set far above any landmark error so every point is an inlier: the
    result is the refined least-squares fit over all five points, which is smooth in the input
    (a RANSAC subset fit would make the crop jump between subsets from frame to frame).
    """
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(
        src.astype(np.float32).reshape(-1, 1, 2),
        dst.astype(np.float32).reshape(-1, 1, 2),
        method=cv2.RANSAC,
        ransacReprojThreshold=1e4,
        refineIters=20,
    )
    if matrix is None:
        raise ValueError("could not estimate a similarity transform from the landmarks")
    return matrix.astype(np.float64)


def validate_frame(frame: np.ndarray) -> None:
    """Raise ValueError unless ``frame`` is a uint8 (H, W, 3) image."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must have shape (H, W, 3), got {frame.shape}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ValueError(f"frame is too small: {frame.shape}")


def choose_face(faces: list[np.ndarray], last_center: np.ndarray | None) -> np.ndarray:
    """The face to follow among several faces' landmarks: the one whose landmark centre is
    closest to ``last_center`` (the face followed so far), else the largest."""
    if len(faces) == 1:
        return faces[0]
    if last_center is not None:
        dists = [float(np.linalg.norm(f.mean(axis=0) - last_center)) for f in faces]
        return faces[int(np.argmin(dists))]
    areas = [float(np.prod(f.max(axis=0) - f.min(axis=0))) for f in faces]
    return faces[int(np.argmax(areas))]


@dataclass(frozen=True)
class AlignResult:
    """Outcome of aligning one frame.

    ``crop`` is the aligned (crop_size, crop_size, 3) RGB uint8 face, or None when no face was
    found. ``n_faces`` counts every face FaceMesh returned (the crop shows only the tracked one).
    ``landmarks`` are the tracked face's (468, 2) float32 pixel coordinates in the input frame, and
    ``transform`` the (2, 3) float64 matrix mapping frame pixels to crop pixels.
    """

    crop: np.ndarray | None
    n_faces: int
    landmarks: np.ndarray | None
    transform: np.ndarray | None

    @property
    def found(self) -> bool:
        return self.crop is not None


class FaceAligner:
    """Detects faces with mediapipe FaceMesh and returns a similarity-aligned square crop.

    With several faces in view it keeps following the face whose landmark centre is closest to the
    previously tracked face; with no history it takes the largest face. The tracking memory
    survives frames without faces (a brief occlusion keeps the same person); call :meth:`reset`
    when the source changes. ``static_image_mode=False`` lets FaceMesh track between frames of a
    video (faster, steadier); use True for unrelated still images.

    ``count_faces_every_frames=N`` (video mode only) tracks one face with FaceMesh and counts the
    faces in view (up to any number, not only ``max_faces``) with the face detector on the first
    frame a face is seen and then on every N-th frame; in between, ``n_faces`` repeats the last
    count. A detection counts as another face when its box centre lies outside the tracked face's
    landmarks. FaceMesh then (re)acquires a face by its own detector's best detection rather than
    the largest face. None: FaceMesh looks for ``max_faces`` faces on every frame (what
    preprocessing of training data uses).

    ``far_faces`` (video mode only; the default there): on frames where FaceMesh finds no face
    on the whole frame, look with the full-range detector and follow the face with FaceMesh on a
    crop around it (``far_faces.FarFaceFinder``). Frames FaceMesh finds a face in are aligned as
    without it. Such a frame counts one face unless ``count_faces_every_frames`` counts them.

    Not thread-safe: use one aligner per thread.
    """

    def __init__(
        self,
        crop_size: int = 112,
        max_faces: int = 2,
        static_image_mode: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        count_faces_every_frames: int | None = None,
        far_faces: bool | None = None,
    ) -> None:
        if crop_size < 16:
            raise ValueError(f"crop_size must be >= 16, got {crop_size}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if count_faces_every_frames is not None:
            if count_faces_every_frames < 1:
                raise ValueError(
                    f"count_faces_every_frames must be >= 1, got {count_faces_every_frames}"
                )
            if static_image_mode:
                raise ValueError("count_faces_every_frames needs video mode (static_image_mode "
                                 "runs FaceMesh's detector on every frame anyway)")
        if far_faces is None:
            far_faces = not static_image_mode
        if far_faces and static_image_mode:
            raise ValueError("far_faces needs video mode (it follows a face inside a crop)")
        import mediapipe as mp

        self.crop_size = int(crop_size)
        self.max_faces = int(max_faces)
        self.static_image_mode = bool(static_image_mode)
        self.count_faces_every_frames = count_faces_every_frames
        self._template = canonical_template(self.crop_size)
        counting = count_faces_every_frames is not None
        self._mesh: Any = ResettableFaceMesh(
            static_image_mode=self.static_image_mode,
            max_num_faces=1 if counting else self.max_faces,
            refine_landmarks=False,
            min_detection_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )
        self._detector: Any = None
        if counting:
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=float(min_detection_confidence)
            )
        self._far: Any = None
        if far_faces:
            from .far_faces import FarFaceFinder

            self._far = FarFaceFinder(min_detection_confidence, min_tracking_confidence)
        self._last_center: np.ndarray | None = None
        self._count_in = 0  # frames until the next count (0: count on the next face seen)
        self._count = 0

    def reset(self) -> None:
        """Forget the tracked face (the next frame picks the largest face), and in video mode
        FaceMesh's own tracking state with it (facemesh.ResettableFaceMesh), so that what is
        found after a reset does not depend on the frames before it."""
        self._last_center = None
        self._count_in = 0
        if self._mesh is not None and not self.static_image_mode:
            self._mesh.reset()
        if self._far is not None:
            self._far.reset()

    def warm_up(self) -> None:
        """Start the native graphs now, on a blank frame (mediapipe starts a graph on its first
        input, and prints its start-up lines then). Leaves no tracking memory."""
        if self._mesh is not None:
            self._mesh.warm_up()
        if self._detector is not None:
            self._detector.process(np.zeros((64, 64, 3), np.uint8))
        if self._far is not None:
            self._far.warm_up()

    def _mesh_faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        if self._mesh is None:
            raise RuntimeError("FaceAligner is closed")
        h, w = rgb.shape[:2]
        result = self._mesh.process(rgb)
        return [landmarks_to_pixels(face, w, h) for face in result.multi_face_landmarks or []]

    def _faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        """FaceMesh on the whole frame, on every frame; where it finds no face (``far_faces``),
        the far-face finder's: the face in the crop it holds, else whatever it acquires. The
        finder only fills frames FaceMesh misses: a frame FaceMesh finds a face in is aligned
        as without it, whatever came before."""
        faces = self._mesh_faces(rgb)
        far = self._far
        if far is None:
            return faces
        if faces:
            far.drop()  # its crop, if any, is where the face was when FaceMesh last missed it
            return faces
        landmarks = far.follow(rgb)
        if landmarks is None:
            landmarks = far.acquire(rgb, self._last_center)
        return [] if landmarks is None else [landmarks]

    def detect(self, frame_bgr: np.ndarray) -> list[np.ndarray]:
        """All faces' landmarks as a list of (468, 2) float32 pixel-coordinate arrays."""
        import cv2

        validate_frame(frame_bgr)
        return self._mesh_faces(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))

    def _count_faces(self, rgb: np.ndarray, tracked: np.ndarray) -> int:
        """The tracked face plus every detection whose box centre lies outside it."""
        h, w = rgb.shape[:2]
        lo, hi = tracked.min(axis=0), tracked.max(axis=0)
        others = 0
        for det in self._detector.process(rgb).detections or []:
            box = det.location_data.relative_bounding_box
            cx, cy = (box.xmin + box.width / 2) * w, (box.ymin + box.height / 2) * h
            others += not (lo[0] <= cx <= hi[0] and lo[1] <= cy <= hi[1])
        return 1 + others

    def _warp(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.warpAffine(
            image,
            matrix,
            (self.crop_size, self.crop_size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )

    def crop_from_landmarks(
        self, frame_bgr: np.ndarray, landmarks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Aligned RGB crop and its (2, 3) transform for a face with known landmarks."""
        matrix = similarity_transform(keypoints_from_landmarks(landmarks), self._template)
        crop = np.ascontiguousarray(self._warp(frame_bgr, matrix)[:, :, ::-1])
        return crop, matrix

    def align(self, frame_bgr: np.ndarray) -> AlignResult:
        """Align one BGR uint8 frame; ``crop`` is None when no face is visible.

        The crop is warped from the RGB image FaceMesh saw: the interpolation works per channel,
        so it has the same bytes as a crop of the BGR frame with its channels swapped."""
        import cv2

        validate_frame(frame_bgr)
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        faces = self._faces(rgb)
        if not faces:
            self._count_in = 0
            return AlignResult(crop=None, n_faces=0, landmarks=None, transform=None)
        landmarks = choose_face(faces, self._last_center)
        self._last_center = landmarks.mean(axis=0)
        n_faces = len(faces)
        if self._detector is not None:
            if self._count_in == 0:
                self._count = self._count_faces(rgb, landmarks)
                self._count_in = self.count_faces_every_frames
            self._count_in -= 1
            n_faces = self._count
        matrix = similarity_transform(keypoints_from_landmarks(landmarks), self._template)
        crop = self._warp(rgb, matrix)
        return AlignResult(crop=crop, n_faces=n_faces, landmarks=landmarks, transform=matrix)

    def close(self) -> None:
        """Release the mediapipe graphs; further calls to :meth:`align` raise RuntimeError."""
        for graph in (self._mesh, self._detector, self._far):
            if graph is not None:
                graph.close()
        self._mesh = self._detector = self._far = None

    def __enter__(self) -> FaceAligner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
