"""The real faces the synthetic generator animates: shipped images, their landmarks, the splits.

An identity is a 256x256 BGR face image (``model/data/faces``, see NOTICE.md there) with its
FaceMesh landmarks. A name with the suffix ``~flip`` is the same image mirrored left-right (its
landmarks are detected again on the mirrored image): one more face shape and look for training,
never a new person, so a flip always stays on its person's side of the train/test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .landmarks import EYE_CORNERS

FACES_DIR = Path(__file__).resolve().parent / "faces"
IDENTITY_SIZE = 256
FLIP_SUFFIX = "~flip"

# Disjoint by person. door-man and single-face might be the same person, so both are in train.
TEST_IDENTITIES: tuple[str, ...] = ("astronaut", "f13-anc", "wolfgang")
TRAIN_IDENTITIES: tuple[str, ...] = (
    "bearded",
    "door-man",
    "f1-su",
    "f15-hao",
    "group-1",
    "group-2",
    "group-3",
    "group-4",
    "group-5",
    "single-face",
)


@dataclass(frozen=True)
class Identity:
    """A real face: a 256x256 BGR image and its FaceMesh landmarks (468, 2) in image pixels."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray

    @property
    def iod_px(self) -> float:
        left = self.landmarks[list(EYE_CORNERS[:2])].mean(axis=0)
        right = self.landmarks[list(EYE_CORNERS[2:])].mean(axis=0)
        return float(np.linalg.norm(right - left))


def available_identities(faces_dir: Path = FACES_DIR) -> list[str]:
    """Names of the shipped identity images (file stems), sorted."""
    return sorted(p.stem for p in faces_dir.glob("*.jpg"))


def person(name: str) -> str:
    """The person an identity name shows (``door-man~flip`` -> ``door-man``)."""
    return name.removesuffix(FLIP_SUFFIX)


def load_identities(
    names: Sequence[str] | None = None, faces_dir: Path = FACES_DIR
) -> list[Identity]:
    """Load identity images and detect their landmarks with FaceMesh (about 20 ms each)."""
    import cv2

    from .align import FaceAligner

    names = list(names) if names is not None else available_identities(faces_dir)
    identities = []
    with FaceAligner(static_image_mode=True, max_faces=1) as aligner:
        for name in names:
            path = faces_dir / f"{person(name)}.jpg"
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"identity image not found or unreadable: {path}")
            if image.shape[:2] != (IDENTITY_SIZE, IDENTITY_SIZE):
                size = (IDENTITY_SIZE, IDENTITY_SIZE)
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if name.endswith(FLIP_SUFFIX):
                image = np.ascontiguousarray(image[:, ::-1])
            faces = aligner.detect(image)
            if not faces:
                raise ValueError(f"no face found in identity image {path} ({name})")
            identities.append(Identity(name=name, image=image, landmarks=faces[0]))
    return identities


def train_test_identities() -> tuple[list[str], list[str]]:
    """Fixed, disjoint (train, test) identity names; a person never appears in both."""
    assert not set(TRAIN_IDENTITIES) & set(TEST_IDENTITIES)
    return list(TRAIN_IDENTITIES), list(TEST_IDENTITIES)
