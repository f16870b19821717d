"""Faces too small for FaceMesh's own detector (model/data/far_faces.py), with the real mediapipe
models on a shipped face photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fesnet.model.data.align import FaceAligner, canonical_template, keypoints_from_landmarks
from fesnet.model.data.far_faces import RETRY_EVERY, square_crop

FRAME_720P = (720, 1280)


def scene(face: np.ndarray, side: int, x: int, y: int, hw=FRAME_720P) -> np.ndarray:
    """A grey frame with ``face`` resized to ``side`` pixels, top-left corner at (x, y)."""
    canvas = np.full((*hw, 3), 90, np.uint8)
    canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side))
    return canvas


def crop_keypoints(result) -> np.ndarray:
    kp = keypoints_from_landmarks(result.landmarks)
    return np.c_[kp, np.ones(len(kp))] @ result.transform.T


def test_a_small_face_in_a_720p_frame_is_found_only_with_the_far_face_finder(real_face_bgr):
    """The photo at 200 px in 1280x720 (about a person 1.5 m from a 720p webcam): FaceMesh
    alone finds it in no frame; with the finder every frame has it, aligned onto the template,
    and its landmarks lie on the face, not elsewhere in the frame."""
    frames = [scene(real_face_bgr, 200, 500 + 2 * i, 260) for i in range(10)]
    with FaceAligner(far_faces=False) as alone:
        assert not any(alone.align(f).found for f in frames)
    with FaceAligner() as aligner:
        results = [aligner.align(f) for f in frames]
    assert all(r.found and r.n_faces == 1 for r in results)
    for i, r in enumerate(results):
        assert np.abs(crop_keypoints(r) - canonical_template(112)).max() < 4.0
        lo, hi = r.landmarks.min(axis=0), r.landmarks.max(axis=0)
        assert lo[0] >= 500 + 2 * i and hi[0] <= 700 + 2 * i and lo[1] >= 260 and hi[1] <= 460


def test_a_far_face_that_moves_out_of_its_crop_is_found_again(real_face_bgr):
    """The crop stays put while FaceMesh follows the face; a face that walks across the frame
    leaves it and is acquired again around its new place, without a frame lost."""
    with FaceAligner() as aligner:
        xs = [100 + 40 * i for i in range(20)]  # 800 px: several crops' widths
        results = [aligner.align(scene(real_face_bgr, 200, x, 260)) for x in xs]
    assert all(r.found for r in results)
    centres = [r.landmarks.mean(axis=0)[0] for r in results]
    assert np.all(np.diff(centres) > 20)  # each frame's landmarks on that frame's face


def test_frames_facemesh_finds_are_aligned_exactly_as_without_the_finder(real_face_bgr):
    """Every frame FaceMesh finds the face in on the whole frame is aligned as without the
    finder, byte for byte, also after frames only the finder found it in (the face walks away
    from the camera and back, in video mode)."""
    near = [scene(real_face_bgr, 200, 40 + 3 * i, 20, hw=(240, 320)) for i in range(8)]
    far = [scene(real_face_bgr, 200, 500, 260) for _ in range(5)]
    frames = near + far + near
    with FaceAligner(far_faces=False) as alone, FaceAligner() as aligner:
        for i, f in enumerate(frames):
            a, b = alone.align(f), aligner.align(f)
            assert b.found
            if 8 <= i < 13:  # the far frames: only the finder finds the face
                assert not a.found
                continue
            assert a.found
            np.testing.assert_array_equal(a.crop, b.crop)
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            np.testing.assert_array_equal(a.transform, b.transform)


class CountingDetector:
    """Counts calls of the detector it wraps."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def process(self, image):
        self.calls += 1
        return self.inner.process(image)

    def close(self) -> None:
        self.inner.close()


def test_without_a_face_the_full_range_detector_runs_on_every_nth_frame_only(rng):
    """Its cost while nobody is in view is bounded: one detector run per RETRY_EVERY frames,
    and no frame of noise or of an empty room yields a face."""
    with FaceAligner() as aligner:
        finder = aligner._far
        finder._detector = counting = CountingDetector(finder._detector)
        n = 5 * RETRY_EVERY
        for i in range(n):
            frame = (np.full((*FRAME_720P, 3), 90, np.uint8) if i % 2 else
                     rng.integers(0, 256, size=(*FRAME_720P, 3), dtype=np.uint8))
            assert not aligner.align(frame).found
    assert counting.calls == n // RETRY_EVERY


def test_square_crop_pads_past_the_frame_with_black():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) + 1
    inside = square_crop(image, 1, 0, 3)
    np.testing.assert_array_equal(inside, image[0:3, 1:4])
    corner = square_crop(image, -2, -1, 4)
    np.testing.assert_array_equal(corner[1:, 2:], image[0:3, 0:2])
    assert not corner[0].any() and not corner[:, :2].any()
    assert not square_crop(image, 10, 10, 3).any()


@pytest.mark.parametrize("kw", [{"far_faces": True, "static_image_mode": True}])
def test_rejects_the_finder_in_still_image_mode(kw):
    with pytest.raises(ValueError, match="video mode"):
        FaceAligner(**kw)


@pytest.mark.parametrize("far", [True, False], ids=["live-aligner", "near-only"])
def test_the_live_spotter_tracks_a_far_face(real_face_bgr, far):
    """The live path (the spotter's tracker over the live aligner, a tiny network): a person
    about 1.5 m from a 720p webcam is found and their crops go to the model; without the
    finder the same stream never finds a face."""
    import torch
    from spot_helpers import make_spotter
    from test_reliability_media import BUSY, frame

    from fesnet.model.backends import TorchBackend
    from fesnet.model.fesnet import FESNet, FESNetConfig
    from fesnet.realtime.engine import Engine
    from fesnet.realtime.tracking import ALIGNER_SETTINGS, mediapipe_aligner

    torch.manual_seed(0)
    engine = Engine(TorchBackend(FESNet(FESNetConfig.tiny()).eval()), 32)
    settings = ALIGNER_SETTINGS["periodic" if far else "near-only"]
    aligner = mediapipe_aligner(**settings)
    try:
        spotter = make_spotter(engine, BUSY, 8, stream="s", aligner=aligner)
        events = []
        for i in range(40):
            events += spotter.process(frame(scene(real_face_bgr, 200, 500 + i % 3, 260), i, i / 30))
        events += spotter.finish()
        summary = spotter.summary()
    finally:
        aligner.close()
    found = [e for e in events if e.type == "face_found"]
    if far:
        assert len(found) == 1 and not [e for e in events if e.type == "face_lost"]
        assert summary["encoded"] > 0
    else:
        assert not found and summary["encoded"] == 0


def test_after_reset_a_video_is_aligned_as_by_a_new_aligner(real_face_bgr, faces_dir):
    """What the finder finds in a video does not depend on the video before it (one aligner
    aligns video after video in preprocessing; FaceMesh keeps tracking state between calls)."""
    other = cv2.imread(str(faces_dir / "wolfgang.jpg"))
    first = [scene(other, 200, 300 + 5 * i, 100) for i in range(6)]
    second = [scene(real_face_bgr, 200, 700 + 3 * i, 300) for i in range(6)]
    with FaceAligner() as fresh:
        want = [fresh.align(f) for f in second]
    with FaceAligner() as aligner:
        for f in first:
            aligner.align(f)
        aligner.reset()
        got = [aligner.align(f) for f in second]
    for a, b in zip(want, got, strict=True):
        assert a.found and b.found
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
