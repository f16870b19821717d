"""FaceAligner on real faces with the real mediapipe FaceMesh model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fesnet.model.data.align import (
    N_LANDMARKS,
    AlignResult,
    FaceAligner,
    canonical_template,
    keypoints_from_landmarks,
    landmarks_to_pixels,
)


def place(face: np.ndarray, canvas_hw: tuple[int, int], x: int, y: int) -> np.ndarray:
    canvas = np.full((*canvas_hw, 3), 90, np.uint8)
    h, w = face.shape[:2]
    canvas[y : y + h, x : x + w] = face
    return canvas


def crop_keypoints(result: AlignResult) -> np.ndarray:
    assert result.landmarks is not None and result.transform is not None
    kp = keypoints_from_landmarks(result.landmarks)
    return np.c_[kp, np.ones(len(kp))] @ result.transform.T


def test_real_face_gives_centred_crop(still_aligner: FaceAligner, real_face_bgr: np.ndarray):
    still_aligner.reset()
    result = still_aligner.align(place(real_face_bgr, (360, 480), 100, 50))
    assert result.found and result.n_faces == 1
    assert result.crop is not None
    assert result.crop.shape == (112, 112, 3) and result.crop.dtype == np.uint8
    assert result.landmarks is not None and result.landmarks.shape == (468, 2)
    assert result.transform is not None and result.transform.shape == (2, 3)
    # The five alignment points land on the canonical template (a similarity fit of 5 points
    # leaves a small residual), so the face is centred and upright in the crop.
    assert np.abs(crop_keypoints(result) - canonical_template(112)).max() < 4.0
    # Brows to chin inside the crop: every FaceMesh landmark maps inside it.
    assert result.landmarks is not None
    all_pts = np.c_[result.landmarks, np.ones(468)] @ result.transform.T
    assert all_pts[:, 1].min() > 2 and all_pts[:, 1].max() < 110


def test_crop_is_rgb(still_aligner: FaceAligner, real_face_bgr: np.ndarray):
    still_aligner.reset()
    frame = place(real_face_bgr, (360, 480), 100, 50)
    result = still_aligner.align(frame)
    assert result.crop is not None and result.transform is not None
    expected_bgr = cv2.warpAffine(frame, result.transform, (112, 112), flags=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(result.crop, expected_bgr[:, :, ::-1])


def test_crop_stable_across_small_translations(
    still_aligner: FaceAligner, real_face_bgr: np.ndarray
):
    crops, keypoints = [], []
    for dx, dy in [(100, 50), (104, 50), (100, 55), (93, 47)]:
        still_aligner.reset()
        result = still_aligner.align(place(real_face_bgr, (360, 480), dx, dy))
        assert result.crop is not None
        crops.append(result.crop.astype(np.float32))
        keypoints.append(crop_keypoints(result))
    for crop, kp in zip(crops[1:], keypoints[1:], strict=True):
        assert np.abs(kp - keypoints[0]).max() < 1.5
        assert np.abs(crop - crops[0]).mean() < 8.0


def test_no_face_gives_none(still_aligner: FaceAligner, rng: np.random.Generator):
    still_aligner.reset()
    blank = np.full((240, 320, 3), 127, np.uint8)
    noise = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    for frame in (blank, noise):
        result = still_aligner.align(frame)
        assert result.crop is None and not result.found
        assert result.n_faces == 0 and result.landmarks is None and result.transform is None


def test_tracks_previous_face_else_largest(faces_dir, still_aligner: FaceAligner):
    small = cv2.resize(cv2.imread(str(faces_dir / "door-man.jpg")), (200, 200))
    large = cv2.resize(cv2.imread(str(faces_dir / "astronaut.jpg")), (240, 240))
    canvas = np.full((300, 640, 3), 90, np.uint8)
    canvas[30:230, 20:220] = small
    canvas[20:260, 380:620] = large
    still_aligner.reset()
    first = still_aligner.align(canvas)
    assert first.n_faces == 2 and first.landmarks is not None
    assert first.landmarks[:, 0].mean() > 320  # no history: the largest (right) face
    # Track the left face, then it must stay chosen although the right one is larger.
    still_aligner.reset()
    still_aligner.align(place(small, (300, 640), 20, 30))
    tracked = still_aligner.align(canvas)
    assert tracked.n_faces == 2 and tracked.landmarks is not None
    assert tracked.landmarks[:, 0].mean() < 320


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64, 3), np.float32),
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
    ],
)
def test_rejects_bad_input(still_aligner: FaceAligner, bad: np.ndarray):
    with pytest.raises(ValueError):
        still_aligner.align(bad)


def test_context_manager_closes(real_face_bgr: np.ndarray):
    with FaceAligner(static_image_mode=True, max_faces=1) as aligner:
        assert aligner.align(real_face_bgr).found
    with pytest.raises(RuntimeError):
        aligner.align(real_face_bgr)


def test_video_mode_on_a_moving_face(real_face_bgr: np.ndarray):
    """Tracking mode (as in the realtime path) keeps the crop steady while the face slides."""
    with FaceAligner(static_image_mode=False, max_faces=1) as aligner:
        kps = []
        for step in range(12):
            result = aligner.align(place(real_face_bgr, (360, 480), 80 + 3 * step, 50))
            assert result.crop is not None
            kps.append(crop_keypoints(result))
    spread = np.ptp(np.stack(kps), axis=0)
    assert spread.max() < 2.0


def test_landmark_conversion_equals_reading_each_landmark(real_face_bgr: np.ndarray):
    """The wire-bytes reading gives the bytes the per-landmark loop gives, and a message laid
    out otherwise (visibility set) is still read right."""
    import mediapipe as mp

    frame = place(real_face_bgr, (360, 480), 100, 50)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        (face,) = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).multi_face_landmarks
    h, w = frame.shape[:2]

    def loop(f) -> np.ndarray:
        return np.array([(p.x * w, p.y * h) for p in f.landmark[:N_LANDMARKS]], np.float32)

    np.testing.assert_array_equal(landmarks_to_pixels(face, w, h), loop(face))
    face.landmark[7].visibility = 0.5  # one entry longer: the fixed layout no longer holds
    np.testing.assert_array_equal(landmarks_to_pixels(face, w, h), loop(face))


def test_periodic_count_finds_a_second_face_and_keeps_the_crops(faces_dir):
    """Counting faces every 3rd frame: the same crops of the tracked face as FaceMesh looking
    for 2 faces on every frame; a second face is counted at the next count, not before, and
    the tracked face itself is never counted twice."""
    left = cv2.resize(cv2.imread(str(faces_dir / "wolfgang.jpg")), (200, 200))
    right = cv2.resize(cv2.imread(str(faces_dir / "door-man.jpg")), (200, 200))
    frames = []
    for i in range(8):
        canvas = np.full((240, 480, 3), 90, np.uint8)
        canvas[20:220, 20 + i % 2 : 220 + i % 2] = left
        if i >= 4:
            canvas[20:220, 260:460] = right
        frames.append(canvas)
    with (
        FaceAligner(max_faces=2) as every_frame,
        FaceAligner(max_faces=2, count_faces_every_frames=3) as counting,
    ):
        mesh = [every_frame.align(f) for f in frames]
        counted = [counting.align(f) for f in frames]
    assert [r.n_faces for r in mesh] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [r.n_faces for r in counted] == [1, 1, 1, 1, 1, 1, 2, 2]  # counts at 0, 3, 6
    for a, b in zip(mesh, counted, strict=True):
        assert a.crop is not None and b.crop is not None
        np.testing.assert_array_equal(a.crop, b.crop)
        np.testing.assert_array_equal(a.transform, b.transform)


@pytest.mark.parametrize(
    "kw",
    [{"count_faces_every_frames": 0}, {"count_faces_every_frames": 5, "static_image_mode": True}],
)
def test_rejects_bad_count_settings(kw):
    with pytest.raises(ValueError):
        FaceAligner(**kw)


def test_after_reset_a_video_mode_aligner_aligns_as_a_new_one(real_face_bgr, faces_dir):
    """FaceMesh keeps tracking state between calls in video mode: after ``reset`` (a new source)
    what the aligner finds in a video does not depend on the video before it."""
    other = cv2.imread(str(faces_dir / "wolfgang.jpg"))
    first = [place(other, (360, 480), 40 + 4 * i, 30) for i in range(6)]
    second = [place(real_face_bgr, (360, 480), 200 - 3 * i, 90) for i in range(6)]
    with FaceAligner(max_faces=1) as fresh:
        want = [fresh.align(f) for f in second]
    with FaceAligner(max_faces=1) as aligner:
        for f in first:
            assert aligner.align(f).found
        aligner.reset()
        got = [aligner.align(f) for f in second]
    for a, b in zip(want, got, strict=True):
        assert a.found and b.found
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
