"""Shedding stale windows when a live stream falls behind: one named rule beside the spotter.

Window work is per 60 Hz slot, not per source frame: dropping frames at a live source does not
shed it (the next frame fills every slot since the last one and makes several windows ready at
once, which takes longer, so more frames drop: latency grows). So when the frame that made
windows ready is *live* (``Frame.live``) and was captured more than ``shed_after_s`` ago, only
the newest of those windows is scored; the older, stale ones are skipped and counted, with a
message at most every ``report_every_s`` of source time. The merger commits slots no window
covered as neutral. Frames of a file read at full speed are not live and never shed (offline
equality). The decision is taken from the frame, so no caller can forget it.
"""

from __future__ import annotations

from collections.abc import Callable

from .types import Frame

Clock = Callable[[], int]  # nanoseconds on the clock Frame.t_capture_ns is taken from


class Overload:
    """One stream's shedding decisions. Not thread-safe: the spotter's infer thread owns it."""

    def __init__(
        self, shed_after_s: float | None, clock: Clock, report_every_s: float = 10.0
    ) -> None:
        self.shed_after_s = shed_after_s
        self.clock = clock
        self.report_every_s = report_every_s
        self.windows_skipped = 0
        self._reported_pts: float | None = None

    def behind(self, newest: Frame | None) -> bool:
        """The newest frame is live and was captured more than ``shed_after_s`` ago."""
        limit = self.shed_after_s
        if limit is None or newest is None or not newest.live:
            return False
        return (self.clock() - newest.t_capture_ns) / 1e9 > limit

    def skip(self, newest: Frame) -> str | None:
        """Count one skipped window; a message for the stream unless one went out recently."""
        self.windows_skipped += 1
        reported = self._reported_pts
        if reported is not None and 0.0 <= newest.pts_s - reported < self.report_every_s:
            return None
        self._reported_pts = newest.pts_s
        return (f"falling behind: {self.windows_skipped} stale windows skipped so far (frames "
                "are dropped too)")
