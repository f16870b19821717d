"""The one place a stream's events are assembled.

Every :class:`~fesnet.realtime.types.SpotEvent` a stream emits is built here, from what its parts
decided: the merger's interval decisions (:meth:`EventAssembler.expression`), the face tracker's
state changes (:meth:`EventAssembler.face`) and status messages of the spotter, the source and a
session phase (:meth:`EventAssembler.status`). An event is complete when it leaves: the one
field set later is ``latency_ms``, stamped by the emitter when the event reaches the sinks. A
new event field is therefore one edit here (and its declaration in ``types.SpotEvent``).

Expression events of one interval share an ``event_id``: the onset's id is handed to its final,
cancelled or interrupted event. Ids are never reused within a stream.
"""

from __future__ import annotations

import threading
from typing import Any

from fesnet.model.geometry import shares_of_rms
from fesnet.model.merger import MergerEvent

from .ring import SlotTimeline
from .tracking import FaceChange
from .types import LABEL_NAMES, Frame, SpotEvent


class EventAssembler:
    """Builds one stream's events. ``status`` is thread-safe (the source thread reports through
    it); ``expression`` and ``face`` belong to the spotter's infer thread."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self._open_ids: dict[int, int] = {}  # onset slot of an open interval -> its event id
        self._next_id = 0
        self._lock = threading.Lock()

    def new_segment(self) -> None:
        """The slot timeline restarted: slot numbers of open intervals mean nothing any more."""
        self._open_ids.clear()

    def _take_id(self) -> int:
        with self._lock:
            event_id, self._next_id = self._next_id, self._next_id + 1
        return event_id

    def expression(
        self, m: MergerEvent, timeline: SlotTimeline, t_trigger_ns: int
    ) -> SpotEvent:
        """An interval decision of the merger, with its slots mapped to the source timeline."""
        on = timeline.meta(m.onset_slot)
        apex = timeline.meta(m.apex_slot)
        off = timeline.meta(m.offset_slot) if m.offset_slot is not None else None
        if m.state == "onset":
            event_id = self._open_ids[m.onset_slot] = self._take_id()
        else:
            found = self._open_ids.pop(m.onset_slot, None)
            event_id = self._take_id() if found is None else found
        regions = None
        if m.offset_slot is not None and m.state != "cancelled" and timeline.region_rms.shape[1]:
            regions = shares_of_rms(timeline.regions(m.onset_slot, m.offset_slot))
        return SpotEvent(
            type="expression",
            stream=self.stream,
            t_s=on.pts_s,
            state=m.state,
            label=LABEL_NAMES[m.label],
            onset_s=on.pts_s,
            apex_s=apex.pts_s,
            offset_s=off.pts_s if off is not None else None,
            onset_frame=on.source_index,
            apex_frame=apex.source_index,
            offset_frame=off.source_index if off is not None else None,
            score=float(m.score),
            regions=regions,
            event_id=event_id,
            t_trigger_ns=t_trigger_ns,
        )

    def face(self, change: FaceChange, t_trigger_ns: int) -> SpotEvent:
        """A face state change (found, lost, several faces) reported by the tracker."""
        return SpotEvent(
            type=change.kind,
            stream=self.stream,
            t_s=change.frame.pts_s,
            onset_frame=change.frame.index,
            message=change.message,
            n_faces=change.n_faces,
            t_trigger_ns=t_trigger_ns,
        )

    def status(
        self,
        frame: Frame | None,
        message: str,
        *,
        state: str | None = None,
        extra: dict[str, Any] | None = None,
        t_trigger_ns: int | None = None,
    ) -> SpotEvent:
        """A status message about ``frame`` (None: before any frame; t_s is then 0). ``state``
        names a phase's status (docs/EVENTS.md), ``extra`` adds keys to the JSON object."""
        if t_trigger_ns is None and frame is not None:
            t_trigger_ns = frame.t_capture_ns
        return SpotEvent(
            type="status",
            stream=self.stream,
            t_s=frame.pts_s if frame is not None else 0.0,
            state=state,  # type: ignore[arg-type]  # the status states of docs/EVENTS.md
            onset_frame=frame.index if frame is not None else None,
            message=message,
            extra=dict(extra or {}),
            t_trigger_ns=t_trigger_ns,
        )
