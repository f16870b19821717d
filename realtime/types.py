"""Data that crosses thread and module boundaries in the streaming spotter.

Two timelines meet here and are kept apart by their names:

- the SOURCE timeline: ``index`` (the source's own frame counter) and ``pts_s`` (its presentation
  timestamp in seconds, e.g. a video file's PTS). Every event is reported on this timeline.
- the MODEL timeline: ``slot``, an int on the 60 Hz grid the network runs on (``MODEL_FPS``).

``t_capture_ns`` is ``time.monotonic_ns()`` taken when a frame left its source; latency is measured
from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

EventType = Literal["expression", "face_lost", "face_found", "status"]
EventState = Literal["onset", "final", "cancelled", "interrupted"]
LABEL_NAMES = {1: "ME", 2: "MaE"}


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded source frame."""

    image: np.ndarray  # (H, W, 3) BGR uint8, as OpenCV decodes it
    index: int  # source frame index (0-based, counts every frame the source produced)
    pts_s: float  # presentation time on the source timeline, seconds
    t_capture_ns: int  # time.monotonic_ns() when the frame was captured / decoded
    stream: str = "0"
    live: bool = False  # from a real-time source (camera, push, paced replay): may go stale
    decode_s: float | None = None  # what decoding this frame cost (None: not measured)


@dataclass(frozen=True, slots=True)
class SlotMeta:
    """Where one model-timeline slot came from."""

    pts_s: float  # the slot's time on the source timeline (the 60 Hz grid point)
    source_index: int  # the source frame nearest to that time
    t_capture_ns: int  # capture time of the newest source frame that made this slot available


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """A 32-slot window ready for the window head, from one stream.

    ``features`` maps each per-slot array the ring holds to its (T, ...) view for this window:
    the cached encoder features ``x_prime`` / ``x_atten`` (and ``crops`` (T, 112, 112, 3) for the
    naive engine mode that re-encodes every window).
    """

    stream: str
    start_slot: int
    features: Mapping[str, np.ndarray]


@dataclass(slots=True)
class SpotEvent:
    """One line of the JSONL event stream (schema: docs/EVENTS.md).

    ``onset_s``/``apex_s``/``offset_s`` are on the source timeline; ``onset_frame``/``apex_frame``/
    ``offset_frame`` are source frame indices. Fields that do not apply to a ``type`` are None and
    left out of the JSON object.
    """

    type: EventType
    stream: str
    t_s: float  # source-timeline time the event refers to (onset for expressions)
    state: EventState | None = None
    label: str | None = None  # "ME" | "MaE"
    onset_s: float | None = None
    apex_s: float | None = None
    offset_s: float | None = None
    onset_frame: int | None = None
    apex_frame: int | None = None
    offset_frame: int | None = None
    score: float | None = None
    regions: dict[str, float] | None = None  # final expressions: each face region's share
    latency_ms: float | None = None
    event_id: int | None = None  # the same id links an expression's onset and final/cancelled
    message: str | None = None  # status and face events: what happened, for humans
    n_faces: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Capture time of the frame that triggered the event; latency_ms is set from it on emission.
    t_trigger_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field that is set, in declaration order, then ``extra``."""
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name in _NOT_IN_JSON:
                continue
            v = getattr(self, f.name)
            if v is None:
                continue
            d[f.name] = round(v, 6) if isinstance(v, float) else v
        d.update(self.extra)
        return d


_NOT_IN_JSON = ("extra", "t_trigger_ns")
