"""Map frames with arbitrary timestamps onto the model's fixed-rate timeline (60 Hz slots).

FESNet is trained and run on a 60 FPS timeline, but cameras and datasets deliver 30, 200 or a
jittery 29.7 FPS. :class:`Resampler` assigns every slot ``k`` (time ``t0 + k / fps``, ``t0`` = the
first frame's timestamp) the source item whose timestamp is nearest; ties go to the older frame.
So a 30 FPS source gets each frame twice, a 200 FPS source is subsampled (slot k takes frame
round(k * 200 / 60)), and timestamp jitter only moves slot boundaries, never reorders frames.

The object is pure (no clocks, threads or I/O): offline preprocessing and the realtime pipeline
drive the same code with recorded or live timestamps and get the same slots.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

# Slot times and midpoints computed from float timestamps can differ in the last bit; anything
# within this tolerance counts as a tie (and goes to the older frame), so 30 -> 60 FPS is exact.
_TIE_EPS_S = 1e-9


class Resampler(Generic[T]):
    """Streaming nearest-neighbour resampler onto slots of ``1 / fps`` seconds.

    ``push(t_s, item)`` returns the slots that became final. A slot is final once no frame still
    to come can be nearer to it than one already seen: a slot at or before the newest frame's
    time (every later frame is farther from it), or a slot before the midpoint of the two newest
    frames. So each push emits the rest of the previous frame's slots, then the new frame's slots
    up to its own timestamp: a 60 FPS camera's frame gets its slot as it arrives, not one frame
    later, and the assignment is exactly the nearest-frame rule (what offline resampling gets).
    ``flush()`` emits the slots of the last frame after its timestamp (up to half of the last
    frame interval after it). Timestamps that do not increase are dropped and counted.
    """

    def __init__(self, fps: float = 60.0) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.reset()

    def reset(self) -> None:
        """Start a new timeline: the next pushed frame defines slot 0."""
        self._t0: float | None = None
        self._next_slot = 0
        self._prev_t: float | None = None
        self._prev_item: T | None = None
        self._last_dt: float | None = None
        self.n_pushed = 0
        self.n_dropped = 0
        self.n_slots = 0

    @property
    def t0(self) -> float | None:
        """Timestamp of slot 0 (the first pushed frame), or None before any frame."""
        return self._t0

    def slot_time(self, k: int) -> float:
        """Time in seconds of slot ``k``."""
        if self._t0 is None:
            raise RuntimeError("no frame pushed yet")
        return self._t0 + k / self.fps

    def _emit_until(self, t_limit: float) -> list[tuple[int, T]]:
        out: list[tuple[int, T]] = []
        item = self._prev_item
        while self.slot_time(self._next_slot) <= t_limit + _TIE_EPS_S:
            out.append((self._next_slot, item))  # type: ignore[arg-type]
            self._next_slot += 1
        self.n_slots += len(out)
        return out

    def push(self, t_s: float, item: T) -> list[tuple[int, T]]:
        """Add a frame captured at ``t_s`` seconds; return the (slot, item) pairs now final."""
        t_s = float(t_s)
        self.n_pushed += 1
        if self._prev_t is None:
            self._t0 = t_s
        elif t_s <= self._prev_t:
            self.n_dropped += 1
            return []
        out = [] if self._prev_t is None else self._emit_until((self._prev_t + t_s) / 2.0)
        if self._prev_t is not None:
            self._last_dt = t_s - self._prev_t
        self._prev_t, self._prev_item = t_s, item
        return out + self._emit_until(t_s)

    def flush(self) -> list[tuple[int, T]]:
        """Emit the remaining slots of the last frame; the timeline continues if pushed again."""
        if self._prev_t is None:
            return []
        half = 0.5 * (self._last_dt if self._last_dt is not None else 1.0 / self.fps)
        return self._emit_until(self._prev_t + half)


def resample_indices(timestamps_s: list[float] | tuple[float, ...], fps: float = 60.0) -> list[int]:
    """Source index for every slot of a whole recording (offline use of :class:`Resampler`)."""
    resampler: Resampler[int] = Resampler(fps)
    out: list[int] = []
    for i, t in enumerate(timestamps_s):
        out.extend(idx for _, idx in resampler.push(t, i))
    out.extend(idx for _, idx in resampler.flush())
    return out
