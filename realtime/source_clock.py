"""The source's own clock, frame to frame: one named rule of stream health beside the spotter.

Within a segment a frame's ``pts_s`` must move forward. Three things can go wrong, and each has
one answer, so that no window ever spans a gap and a segment is spotted exactly as offline
spotting of the same crops would be:

- a jump forward by more than ``max_gap_s`` (a camera that stalled, a stream that reconnected):
  the segment ends and a new one starts with this frame;
- a jump back by more than ``max_gap_s`` (a camera clock reset, a replay restarting at 0): the
  same;
- a frame at most ``max_gap_s`` older than (or as old as) the newest one (reordered or
  repeated): it is skipped and counted.
"""

from __future__ import annotations

from typing import NamedTuple


class ClockStep(NamedTuple):
    """What to do with a frame: ``restart`` names why the segment ends first (None: it goes
    on); ``skip`` drops the frame."""

    restart: str | None = None
    skip: bool = False


GO_ON = ClockStep()


class SourceClock:
    """Judges each frame's time against the newest one of the segment. Counts the skipped."""

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.out_of_order = 0

    def step(self, newest_pts_s: float | None, pts_s: float) -> ClockStep:
        """``newest_pts_s``: the newest frame's time in this segment (None at its start)."""
        if newest_pts_s is None:
            return GO_ON
        jump = pts_s - newest_pts_s
        if jump > self.max_gap_s:
            return ClockStep(restart=f"source gap of {jump:.2f} s; timeline restarted")
        if jump < -self.max_gap_s:
            return ClockStep(restart=f"source clock went back {-jump:.2f} s; timeline restarted")
        if jump <= 0:
            self.out_of_order += 1
            return ClockStep(skip=True)
        return GO_ON
