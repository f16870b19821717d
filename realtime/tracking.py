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

Policy for a loss (documented in docs/EVENTS.md): crops are not fed to the model while the face is
lost; the stream's segment ends (``TrackResult.segment_ended``): the pipeline flushes the merger
(open intervals are closed at the last good slot), and resets the ring and the resampler, so no
window ever spans a gap. A re-acquired face starts a new segment (its first window comes 32 slots
later).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .types import Frame, SpotEvent

NO_FACE = "no_face"
TRACKING = "tracking"
SEVERAL_FACES = "several_faces"


class Aligner(Protocol):
    def align(self, frame_bgr: np.ndarray): ...  # -> AlignResult (crop, n_faces, landmarks)

    def reset(self) -> None: ...


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


@dataclass
class TrackResult:
    feed: list[Feed]  # crops to feed the model now, in source order (empty: feed nothing)
    state: str
    n_faces: int
    events: list[SpotEvent] = field(default_factory=list)
    segment_ended: bool = False  # the face was lost: flush the merger, reset ring + resampler
    landmarks: np.ndarray | None = None
    crop: np.ndarray | None = None  # this frame's own aligned crop, if any (for viewers)


class FaceTracker:
    def __init__(self, aligner: Aligner, config: TrackerConfig | None = None) -> None:
        self.aligner = aligner
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

    def reset(self) -> None:
        self.state = NO_FACE
        self._hits = self._misses = self._several = 0
        self._several_reported = False
        self._last = None
        self._pending = []
        self.aligner.reset()

    def _event(self, kind: str, frame: Frame, message: str, n_faces: int) -> SpotEvent:
        return SpotEvent(
            type=kind,  # type: ignore[arg-type]
            stream=frame.stream,
            t_s=frame.pts_s,
            onset_frame=frame.index,
            message=message,
            n_faces=n_faces,
        )

    def update(self, frame: Frame) -> TrackResult:
        res = self.aligner.align(frame.image)
        n = int(res.n_faces)
        cfg = self.config
        events: list[SpotEvent] = []
        if res.crop is None:
            self._hits = 0
            self._several = 0
            self._pending = []
            if self.state == NO_FACE:
                return TrackResult([], self.state, n)
            self._misses += 1
            if self._misses < cfg.lost_after_misses:
                assert self._last is not None
                bridge = Feed(frame, self._last.crop, self._last.crop_index)
                return TrackResult([bridge], self.state, n)
            self.state = NO_FACE
            self.faces_lost += 1
            self._last = None
            self._several_reported = False
            events.append(self._event("face_lost", frame, "face lost", n))
            return TrackResult([], self.state, n, events, segment_ended=True)

        self._misses = 0
        own = Feed(frame, res.crop, frame.index)
        if self.state == NO_FACE:
            self._hits += 1
            self._pending.append(own)
            if self._hits < cfg.found_after_hits:
                return TrackResult([], self.state, n, landmarks=res.landmarks, crop=res.crop)
            self.state = TRACKING
            self.faces_found += 1
            what = "face found" if self.faces_found == 1 else "face re-acquired"
            events.append(self._event("face_found", self._pending[0].frame, what, n))
            feed, self._pending = self._pending, []
        else:
            feed = [own]

        self._several = self._several + 1 if n > 1 else 0
        if self._several >= cfg.several_after_frames and not self._several_reported:
            self._several_reported = True
            self.state = SEVERAL_FACES
            events.append(
                self._event("status", frame, f"{n} faces in view; tracking the same one", n)
            )
        elif n == 1 and self._several_reported:
            self._several_reported = False
            self.state = TRACKING
            events.append(self._event("status", frame, "one face in view again", n))
        self._last = own
        return TrackResult(feed, self.state, n, events, landmarks=res.landmarks, crop=res.crop)
