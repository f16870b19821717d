"""scripts/suite_far.py: the farther copy of a clip keeps its frames, labels' timing and size,
and only shrinks the picture into the middle of itself."""

from __future__ import annotations

import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "suite_far.py"


@pytest.fixture(scope="module")
def far() -> dict:
    return runpy.run_path(str(SCRIPT))


def test_a_farther_frame_is_the_frame_shrunk_into_its_blurred_self(far, rng):
    frame = rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)
    out = far["farther"](frame, 0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[18:54, 32:96],
                                  cv2.resize(frame, (64, 36), interpolation=cv2.INTER_AREA))
    assert np.array_equal(far["farther"](frame, 1.0), frame)


def test_the_farther_clip_keeps_every_frame_losslessly(far, tmp_path, rng):
    src, dst = tmp_path / "clip.avi", tmp_path / "far.mkv"
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    out = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (64, 48))
    for f in frames:
        out.write(f)
    out.release()
    far["write_farther"](src, dst, 0.5)
    cap = cv2.VideoCapture(str(dst))
    got = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        got.append(image)
    assert cap.get(cv2.CAP_PROP_FPS) == 30.0
    assert len(got) == len(frames)
    for f, g in zip(frames, got, strict=True):
        np.testing.assert_array_equal(g, far["farther"](f, 0.5))
