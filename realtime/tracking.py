"""Face tracking states around :class:`fesnet.model.data.align.FaceAligner`.

States: ``no_face`` (nothing confirmed yet, or the face was lost), ``tracking`` (one face, crops go
to the model), ``several_faces`` (still tracking the face nearest the previous one, flagged).
Transitions are events (``face_found``, ``face_lost``, ``status``), with hysteresis so a single
missed detection does not spam:

- a face is *found* after ``found_after_hits`` consecutive frames with a face; the crops of those
  frames are held back and fed once the face is confirmed, so nothing is lost (only delayed);
- it is *lost* after ``lost_after_misses`` consecutive frames without one. A shorter gap is
  bridged by repeating the last good crop, so one missed detection keeps the timeline intact;
- several faces are reported after ``several_after_frames`` consecutive frames with more than one.
  The live aligner counts faces twice a second and repeats its count in between
  (``COUNT_FACES_EVERY_FRAMES``), so a second face is reported within about 0.6 s.

Policy for a loss (documented in docs/EVENTS.md): crops are not fed to the model while the face is
lost; the stream's segment ends (``TrackResult.segment_ended``): the spotter flushes the merger
(open intervals are closed at the last good slot), and resets the ring and the resampler, so no
window ever spans a gap. A re-acquired face starts a new segment (its first window comes 32 slots
later).

The tracker reports what happened (:class:`FaceChange`); the spotter turns that into events, in
the one place events are assembled. Every crop it feeds carries the face's landmarks in frame
pixels and the frame -> crop transform, for per-slot features computed from geometry.

The aligner (mediapipe FaceMesh) is made by :meth:`FaceTracker.open` on the thread that tracks,
unless one is given: loading it takes a moment, and a live source should start only after that.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from .types import Frame

NO_FACE = "no_face"
TRACKING = "tracking"
SEVERAL_FACES = "several_faces"


class Aligner(Protocol):
    def align(self, frame_bgr: np.ndarray) -> Any: ...  # AlignResult: crop, n_faces, landmarks,
    # transform (fesnet.model.data.align)

    def reset(self) -> None: ...

    def close(self) -> None: ...


def import_on_its_own_thread(name: str) -> None:
    """Import module ``name`` on a short-lived thread of its own (a no-op once it is imported).

    mediapipe 0.10.14 keeps an exception from its own import in a module global (sounddevice's
    "PortAudio library not found", ``mediapipe.tasks.python.audio.core.audio_record.sd_error``),
    and its traceback keeps every frame of the importing thread alive for the whole process.
    Imported on a pipeline's align thread, that was the first session's pipeline, spotter and
    (in a server) its WebRTC peer, never freed; imported here, only this thread's frames."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            importlib.import_module(name)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, name=f"import-{name}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


COUNT_FACES_EVERY_FRAMES = 15
"""How often the live aligner looks for other faces: every 15th frame, twice a second at 30 FPS
(the face detector costs about 4.5 ms a call here: 0.3 ms a frame this way).
Between counts FaceMesh only follows the tracked face (fesnet.model.data.align explains why)."""
ALIGNER_SETTINGS: dict[str, dict[str, Any]] = {
    "periodic": {"count_faces_every_frames": COUNT_FACES_EVERY_FRAMES},
    "every-frame": {"count_faces_every_frames": None},
    "near-only": {"count_faces_every_frames": COUNT_FACES_EVERY_FRAMES, "far_faces": False},
}
"""The live aligner's settings by name (the benchmark compares them): ``periodic``, the live
default; ``every-frame``, FaceMesh looking for 2 faces on every frame (the setting before the
periodic count); ``near-only``, the live default without the far-face finder (the aligner
before it: faces that fill less than about a fifth of the frame are not found)."""


def mediapipe_aligner(
    count_faces_every_frames: int | None = COUNT_FACES_EVERY_FRAMES, far_faces: bool = True
) -> Aligner:
    """The project's aligner (fesnet.model.data.align): FaceMesh, 112 px crops, other faces
    counted every ``count_faces_every_frames`` frames (None: FaceMesh looks for 2 faces on every
    frame, the setting before the periodic count; its crops are the same, it costs more), faces
    too small for FaceMesh's detector found by the far-face finder (``far_faces``).

    Its native graphs start on their first frame and print known start-up noise then: a blank
    frame starts them here, inside a filter that drops exactly that noise
    (fesnet.model.third_party_logs).
    A frame without a face leaves the aligner's tracking memory empty."""
    from fesnet.model.third_party_logs import ignore_known_warnings, native_stderr_filtered

    ignore_known_warnings()
    with native_stderr_filtered():
        import_on_its_own_thread("mediapipe")  # before align.py imports it on this thread
        from fesnet.model.data.align import FaceAligner

        aligner = FaceAligner(
            crop_size=112, max_faces=2, count_faces_every_frames=count_faces_every_frames,
            far_faces=far_faces,
        )
        aligner.warm_up()
    return aligner


@dataclass(frozen=True)
class TrackerConfig:
    found_after_hits: int = 2
    lost_after_misses: int = 3
    several_after_frames: int = 3

    def __post_init__(self) -> None:
        for name in ("found_after_hits", "lost_after_misses", "several_after_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrackerConfig.{name} must be >= 1")


@dataclass(frozen=True)
class Feed:
    """One crop for the model: the source frame it stands for and whose crop it is."""

    frame: Frame
    crop: np.ndarray  # (112, 112, 3) RGB uint8
    crop_index: int  # source index of the frame the crop was aligned from (bridging repeats it)
    landmarks: np.ndarray | None = None  # (468, 2) float32, frame pixels of the crop's frame
    transform: np.ndarray | None = None  # (2, 3) frame pixels -> crop pixels


@dataclass(frozen=True)
class FaceChange:
    """A change of the face state, as the tracker saw it; the spotter makes it an event."""

    kind: Literal["face_found", "face_lost", "status"]
    frame: Frame  # the frame it refers to (a found face: the first frame of the confirmation)
    message: str
    n_faces: int


@dataclass
class TrackResult:
    feed: list[Feed]  # crops to feed the model now, in source order (empty: feed nothing)
    state: str
    n_faces: int
    changes: list[FaceChange] = field(default_factory=list)
    segment_ended: bool = False  # the face was lost: flush the merger, reset ring + resampler
    crop: np.ndarray | None = None  # this frame's own aligned crop, if any (for viewers)
    landmarks: np.ndarray | None = None  # this frame's tracked face, frame pixels (468, 2)
    transform: np.ndarray | None = None  # this frame's frame -> crop transform (2, 3)


class FaceTracker:
    """Face states over an aligner. ``aligner=None``: :meth:`open` makes one with
    ``make_aligner`` (mediapipe by default) and :meth:`close` releases it; a given aligner
    belongs to the caller."""

    def __init__(
        self,
        aligner: Aligner | None = None,
        config: TrackerConfig | None = None,
        make_aligner: Callable[[], Aligner] = mediapipe_aligner,
    ) -> None:
        self.aligner = aligner
        self._make_aligner = make_aligner if aligner is None else None
        self.config = config or TrackerConfig()
        self.state = NO_FACE
        self.faces_lost = 0
        self.faces_found = 0
        self._hits = 0
        self._misses = 0
        self._several = 0
        self._several_reported = False
        self._last: Feed | None = None
        self._pending: list[Feed] = []

    def open(self) -> FaceTracker:
        """Make the aligner now (on the tracking thread) if this tracker owns one."""
        if self.aligner is None:
            assert self._make_aligner is not None
            self.aligner = self._make_aligner()
        return self

    def close(self) -> None:
        """Release an aligner this tracker made (a given one is left to its owner)."""
        if self._make_aligner is not None and self.aligner is not None:
            self.aligner.close()
            self.aligner = None

    def reset(self) -> None:
        self.state = NO_FACE
        self._hits = self._misses = self._several = 0
        self._several_reported = False
        self._last = None
        self._pending = []
        if self.aligner is not None:
            self.aligner.reset()

    def update(self, frame: Frame) -> TrackResult:
        res = self.open().aligner.align(frame.image)  # type: ignore[union-attr]
        n = int(res.n_faces)
        cfg = self.config
        changes: list[FaceChange] = []
        if res.crop is None:
            self._hits = 0
            self._several = 0
            self._pending = []
            if self.state == NO_FACE:
                return TrackResult([], self.state, n)
            self._misses += 1
            if self._misses < cfg.lost_after_misses:
                last = self._last
                assert last is not None
                bridge = Feed(frame, last.crop, last.crop_index, last.landmarks, last.transform)
                return TrackResult([bridge], self.state, n)
            self.state = NO_FACE
            self.faces_lost += 1
            self._last = None
            self._several_reported = False
            changes.append(FaceChange("face_lost", frame, "face lost", n))
            return TrackResult([], self.state, n, changes, segment_ended=True)

        self._misses = 0
        own = Feed(frame, res.crop, frame.index, res.landmarks, res.transform)
        seen = {"crop": res.crop, "landmarks": res.landmarks, "transform": res.transform}
        if self.state == NO_FACE:
            self._hits += 1
            self._pending.append(own)
            if self._hits < cfg.found_after_hits:
                return TrackResult([], self.state, n, **seen)
            self.state = TRACKING
            self.faces_found += 1
            what = "face found" if self.faces_found == 1 else "face re-acquired"
            changes.append(FaceChange("face_found", self._pending[0].frame, what, n))
            feed, self._pending = self._pending, []
        else:
            feed = [own]

        self._several = self._several + 1 if n > 1 else 0
        if self._several >= cfg.several_after_frames and not self._several_reported:
            self._several_reported = True
            self.state = SEVERAL_FACES
            message = f"{n} faces in view; tracking the same one"
            changes.append(FaceChange("status", frame, message, n))
        elif n == 1 and self._several_reported:
            self._several_reported = False
            self.state = TRACKING
            changes.append(FaceChange("status", frame, "one face in view again", n))
        self._last = own
        return TrackResult(feed, self.state, n, changes, **seen)
