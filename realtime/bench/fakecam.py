"""Real-face video for a camera that is not there: demos without a webcam and browser tests.

Two sources of real faces, both shipped with the project: the bundled sample clip
(``realtime/assets/sample.mp4``, a real face with synthetic expressions) and, where that is
missing, a shipped face photo (``model/data/faces/``) animated with a small head motion (a slow
sway, nod and zoom) so a face tracker sees a live, moving face.

:func:`write_y4m` writes frames as YUV4MPEG2 (4:2:0), the format Chromium's
``--use-file-for-fake-video-capture`` plays as a fake webcam.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fesnet.realtime.sample_clip import SAMPLE_CLIP


def face_image_path(name: str = "single-face.jpg") -> Path:
    """A face photo shipped in ``fesnet.model.data`` (found without importing that package)."""
    spec = importlib.util.find_spec("fesnet.model.data")
    for folder in spec.submodule_search_locations if spec else []:
        if (Path(folder) / "faces" / name).is_file():
            return Path(folder) / "faces" / name
    raise FileNotFoundError(f"shipped face image {name} not found")


def animated_face_frames(
    n_frames: int,
    size: tuple[int, int] = (640, 480),
    fps: float = 30.0,
    image: str | Path | None = None,
) -> Iterator[np.ndarray]:
    """``n_frames`` BGR frames (H, W, 3) of a shipped face photo under a small head motion."""
    import cv2

    path = Path(image) if image is not None else face_image_path()
    src = cv2.imread(str(path))
    if src is None:
        raise FileNotFoundError(f"cannot read face image {path}")
    w, h = size
    scale0 = min(w / src.shape[1], h / src.shape[0]) * 0.9
    for i in range(n_frames):
        t = i / fps
        angle = 3.0 * math.sin(2 * math.pi * 0.4 * t)  # degrees of roll
        scale = scale0 * (1.0 + 0.03 * math.sin(2 * math.pi * 0.25 * t))
        dx = 6.0 * math.sin(2 * math.pi * 0.3 * t)
        dy = 4.0 * math.sin(2 * math.pi * 0.5 * t)
        m = cv2.getRotationMatrix2D((src.shape[1] / 2, src.shape[0] / 2), angle, scale)
        m[0, 2] += w / 2 - src.shape[1] / 2 + dx
        m[1, 2] += h / 2 - src.shape[0] / 2 + dy
        yield cv2.warpAffine(src, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def clip_frames(
    path: str | Path, n_frames: int | None = None, size: tuple[int, int] | None = None
) -> Iterator[np.ndarray]:
    """BGR frames of a video file (resized to ``size`` when given)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    try:
        i = 0
        while n_frames is None or i < n_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if size is not None and (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            yield frame
            i += 1
    finally:
        cap.release()


def real_face_frames(
    n_frames: int, size: tuple[int, int] = (640, 480), fps: float = 30.0
) -> list[np.ndarray]:
    """A real face: the sample clip's first frames if it is bundled, else an animated photo."""
    if SAMPLE_CLIP.is_file():
        frames = list(clip_frames(SAMPLE_CLIP, n_frames, size))
        if frames:
            return frames
    return list(animated_face_frames(n_frames, size, fps))


def write_y4m(frames: list[np.ndarray], path: str | Path, fps: int = 30) -> Path:
    """BGR frames (same even size) -> a YUV4MPEG2 4:2:0 file (Chromium's fake camera format)."""
    import cv2

    if not frames:
        raise ValueError("no frames to write")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"y4m 4:2:0 needs an even frame size, got {w}x{h}")
    path = Path(path)
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            if frame.shape[:2] != (h, w):
                raise ValueError("all frames must have the same size")
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())  # Y, U, V planes
    return path
