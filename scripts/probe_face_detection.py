"""Why the aligner finds no face in a video: mediapipe's detectors on whole frames and on square
crops around the face, and how many frames a full-range fallback would recover.

FaceMesh (mediapipe 0.10.14's legacy solution, what ``FaceAligner`` runs) acquires a face with
the short-range face detector and then follows it from its own landmarks. This probe prints, for
every ``--every``-th frame, the best score of the short-range detector (``model_selection=0``, the
one inside FaceMesh) and of the full-range one (``model_selection=1``) on the whole frame, the
short-range score on the frame made grey, and the scores on square crops of ``k`` times the
full-range box, with whether FaceMesh finds the face there. Over every frame it counts the frames
in which FaceMesh (video mode) finds a face on the grey frame, and runs the fallback proposed for
the aligner, counting the frames with a face:
FaceMesh on the whole frame; where it finds none, FaceMesh (video mode) on a fixed square crop of
``--crop`` times the full-range detector's box, kept while FaceMesh follows the face inside it;
where that loses the face, the full-range detector and a static FaceMesh on a new crop in the
same frame. A diagnostic, not product code: the aligner's far-face finder
(``model/data/far_faces.py``) grew out of this fallback, with a crop that follows the face.

    python scripts/probe_face_detection.py .cache/suite/v1/einstein-30fps-720p-4ea324fe32.mp4
"""

from __future__ import annotations

import argparse
import time

import cv2
import mediapipe as mp
import numpy as np

from fesnet.model.data.align import landmarks_to_pixels


def best_score(detector, rgb: np.ndarray) -> float:
    found = detector.process(np.ascontiguousarray(rgb)).detections or []
    return max((float(d.score[0]) for d in found), default=0.0)


def box_px(detector, rgb: np.ndarray) -> tuple[float, float, float] | None:
    """Centre x, y and the longer side (pixels) of the detector's best box."""
    found = detector.process(rgb).detections or []
    if not found:
        return None
    b = max(found, key=lambda d: d.score[0]).location_data.relative_bounding_box
    h, w = rgb.shape[:2]
    return (b.xmin + b.width / 2) * w, (b.ymin + b.height / 2) * h, max(b.width * w, b.height * h)


def square(rgb: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, int, int]:
    """A square crop (zero-padded past the frame) and its top-left corner in the frame."""
    s = round(side)
    x0, y0 = round(cx - s / 2), round(cy - s / 2)
    pad = cv2.copyMakeBorder(rgb, s, s, s, s, cv2.BORDER_CONSTANT)
    return np.ascontiguousarray(pad[y0 + s : y0 + 2 * s, x0 + s : x0 + 2 * s]), x0, y0


def mesh_in(mesh, crop: np.ndarray, x0: int, y0: int) -> np.ndarray | None:
    faces = mesh.process(crop).multi_face_landmarks
    if not faces:
        return None
    return landmarks_to_pixels(faces[0], crop.shape[1], crop.shape[0]) + np.array([x0, y0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video")
    p.add_argument("--every", type=int, default=100, help="probe every N-th frame")
    p.add_argument("--crop", type=float, default=1.5, help="fallback crop, times the box side")
    a = p.parse_args()
    fm, fd = mp.solutions.face_mesh, mp.solutions.face_detection
    short = fd.FaceDetection(model_selection=0, min_detection_confidence=0.1)
    full = fd.FaceDetection(model_selection=1, min_detection_confidence=0.1)
    still_mesh = fm.FaceMesh(static_image_mode=True, max_num_faces=1)
    frame_mesh, crop_mesh, grey_mesh = (fm.FaceMesh(max_num_faces=1) for _ in range(3))
    print("| frame | short | full | short, grey | FaceMesh | crop k: short / full / FaceMesh |")
    print("|---:|---:|---:|---:|---|---|")
    cap = cv2.VideoCapture(a.video)
    n = on_frame = on_crop = on_grey = 0
    roi: tuple[float, float, float] | None = None
    extra_ms = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        grey = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2RGB)
        on_grey += mesh_in(grey_mesh, grey, 0, 0) is not None
        if n % a.every == 0:
            box = box_px(full, rgb)
            row = [f"{best_score(short, rgb):.2f}", f"{best_score(full, rgb):.2f}",
                   f"{best_score(short, grey):.2f}",
                   str(mesh_in(still_mesh, rgb, 0, 0) is not None)]
            crops = []
            for k in (1.2, 1.5, 2.0, 2.5, 3.0, 4.0) if box else ():
                c, x0, y0 = square(rgb, box[0], box[1], k * box[2])
                crops.append(f"{k:g}: {best_score(short, c):.2f} / {best_score(full, c):.2f} / "
                             f"{'yes' if mesh_in(still_mesh, c, x0, y0) is not None else 'no'}")
            print(f"| {n} | {' | '.join(row)} | {'; '.join(crops) or 'no box'} |")
        n += 1
        if roi is None and mesh_in(frame_mesh, rgb, 0, 0) is not None:
            on_frame += 1
            continue
        t0 = time.perf_counter()
        lm = None
        if roi is not None:
            lm = mesh_in(crop_mesh, *square(rgb, roi[0], roi[1], roi[2]))
        if lm is None:  # acquire (or re-acquire) in this frame with the full-range detector
            box = box_px(full, rgb)
            roi = None if box is None else (box[0], box[1], a.crop * box[2])
            if roi is not None:
                lm = mesh_in(still_mesh, *square(rgb, roi[0], roi[1], roi[2]))
        extra_ms.append(1000 * (time.perf_counter() - t0))
        on_crop += lm is not None
    print(f"\n{n} frames: FaceMesh on the frame finds a face in {on_frame}, the full-range "
          f"fallback in {on_crop} more ({100 * (on_frame + on_crop) / max(n, 1):.1f}% in all); "
          f"the fallback costs {np.median(extra_ms) if extra_ms else 0:.1f} ms per frame "
          f"(median, on top of FaceMesh). FaceMesh on the grey frames: {on_grey}.")


if __name__ == "__main__":
    main()
