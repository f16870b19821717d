"""The real faces the synthetic generator animates: shipped images, their landmarks, the splits.

An identity is a 256x256 BGR face image (``model/data/faces``, see NOTICE.md there) with its
FaceMesh landmarks. A name with the suffix ``~flip`` is the same image mirrored left-right (its
landmarks are detected again on the mirrored image): one more face shape and look for training,
never a new person, so a flip always stays on its person's side of the train/test split. Morphs
(``a+b@0.40``) and jitters (``~j7``) are made by variants.py; :func:`people` names the persons
any identity shows, and splits are checked by person.

Who is where:

- TEST: the held-out test identities of every evaluation (never trained on, never used to
  choose anything).
- RESERVED_PEOPLE: TEST plus the people that checks outside training use (Grace Hopper, Obama,
  Einstein) and Lenna: no training or validation identity may show any of them, morphs included.
- TRAIN: the training people of the original set; V2_TRAIN adds two of the newer real faces;
  V2_VAL holds the other three out, with their morphs, to choose thresholds and checkpoints on
  people the network never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .landmarks import EYE_CORNERS
from .variants import FLIP_SUFFIX as FLIP_SUFFIX
from .variants import image_of, people

FACES_DIR = Path(__file__).resolve().parent / "faces"
IDENTITY_SIZE = 256

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
RESERVED_PEOPLE: tuple[str, ...] = (
    *TEST_IDENTITIES, "grace_hopper", "hopper", "obama", "einstein", "lenna", "lena",
)
V2_TRAIN_IDENTITIES: tuple[str, ...] = (*TRAIN_IDENTITIES, "takeo", "walter")
V2_VAL_IDENTITIES: tuple[str, ...] = ("biden", "jesse", "luispedro")


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
    """The person an identity name shows (``door-man~flip`` -> ``door-man``; a morph's people
    joined by ``+``)."""
    return "+".join(people(name))


def is_reserved(name: str) -> bool:
    """Whether an identity shows a reserved person (RESERVED_PEOPLE), alone or in a morph."""
    reserved = set(RESERVED_PEOPLE)
    return any(p.lower() in reserved or p.lower().startswith(tuple(reserved))
               for p in people(name))


def load_identities(
    names: Sequence[str] | None = None, faces_dir: Path = FACES_DIR
) -> list[Identity]:
    """Load identity images (variants built from theirs: variants.py) and detect their landmarks
    with FaceMesh (about 20 ms each; a morph or jitter 0.1-0.3 s)."""
    import cv2

    from .align import FaceAligner

    names = list(names) if names is not None else available_identities(faces_dir)

    def read(who: str) -> np.ndarray:
        path = faces_dir / f"{who}.jpg"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"identity image not found or unreadable: {path}")
        if image.shape[:2] != (IDENTITY_SIZE, IDENTITY_SIZE):
            size = (IDENTITY_SIZE, IDENTITY_SIZE)
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image

    identities = []
    with FaceAligner(static_image_mode=True, max_faces=1) as aligner:

        def detect(image: np.ndarray, name: str = "") -> np.ndarray:
            faces = aligner.detect(image)
            if not faces:
                raise ValueError(f"no face found in identity image {name or 'of a variant'}")
            return faces[0]

        for name in names:
            image = image_of(name, read, detect)
            identities.append(Identity(name=name, image=image, landmarks=detect(image, name)))
    return identities


def train_test_identities() -> tuple[list[str], list[str]]:
    """Fixed, disjoint (train, test) identity names; a person never appears in both."""
    assert not set(TRAIN_IDENTITIES) & set(TEST_IDENTITIES)
    return list(TRAIN_IDENTITIES), list(TEST_IDENTITIES)
