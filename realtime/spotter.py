"""One stream's spotting state: :class:`Spotter`, a plain per-stream object with two roles.

Per source frame:

    track   (align role, the align thread): FaceTracker (mediapipe landmarks -> similarity crop,
            face states). It touches only the tracker.
    consume (infer role, the infer thread): Resampler (60 Hz slots by timestamp; a 30 FPS frame
            fills 2 slots, a 200 FPS file is subsampled) -> SlotFeatures (encoder once per
            distinct crop) -> FeatureRing + SlotTimeline -> WindowScheduler (every ``stride``
            slots, as offline ``window_starts``) -> Engine.step (window head) ->
            IntervalMerger.update -> EventAssembler -> events.

``process(frame)`` runs both on one thread. :class:`~fesnet.realtime.pipeline.Pipeline` runs
``track`` and ``consume`` on two threads, one frame apart; the roles share only the thread-safe
``stats``. Time comes from an injected ``clock`` (``time.monotonic_ns`` by default): it decides
staleness and latencies, so tests can drive it.

Segments. The slot timeline restarts (ring, timeline, resampler, scheduler, merger and per-slot
features reset) when the face is lost or the source clock jumps by more than ``max_gap_s``
(forwards, or backwards: a camera clock reset or a replay restarting at 0): the segment is ended
exactly like the end of a stream (resampler flush, tail window, ``merger.flush()``), so no window
ever spans a gap and a segment is spotted exactly as offline spotting of the same crops would. A
frame at most ``max_gap_s`` older than the newest one (reordered or repeated) is skipped and
counted (``frames_out_of_order``). A camera that keeps delivering the identical image for
``frozen_after_s`` gets a ``status`` event (and another when the image changes again); its frames
are still spotted. Stopping early (SIGINT, ``stop()``) calls :meth:`Spotter.interrupt`: an open
interval is closed as "interrupted".

Overload. Window work is per 60 Hz slot, not per source frame: dropping frames at a live source
does not shed it (the next frame fills every slot since the last one and makes several windows
ready at once, which takes longer, so more frames drop: latency grows). So when the frame that
made windows ready is *live* (``Frame.live``) and was captured more than ``shed_after_s`` ago,
only the newest of those windows is scored; the older, stale ones are skipped and counted
(``windows_skipped``, and a ``status`` event at most every 10 s). The merger commits slots no
window covered as neutral. Frames of a file read at full speed are not live and never shed
(offline equality). The decision is the spotter's own, from the frame: no caller can forget it.

Phases. A :class:`Phase` (the neutral-baseline calibration, calibration/baseline.py) composes
with any spotter: it sees each frame before and after the spotter consumes it, may hold back
events and drive the spotter through its public methods (``end_segment``,
``use_merger_config``), and ends itself. Observers (realtime/observers.py) see the spotter
without reaching into it.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fesnet.model.data.resample import Resampler
from fesnet.model.geometry import N_REGIONS, RMS
from fesnet.model.merger import ConfigError, IntervalMerger, MergerConfig, MergerEvent

from .assembly import EventAssembler
from .engine import GEOMETRY, Engine, WindowScheduler
from .features import SlotFeatures
from .observers import Observer
from .ring import FeatureRing, SlotTimeline
from .stats import StageStats
from .tracking import FaceTracker, Feed, TrackResult
from .types import Frame, SlotMeta, SpotEvent, WindowRequest

Clock = Callable[[], int]  # nanoseconds on the clock Frame.t_capture_ns is taken from


@dataclass(frozen=True)
class SpotterConfig:
    """How one stream is spotted around the model (the module docstring explains each)."""

    max_gap_s: float = 0.5
    frozen_after_s: float = 2.0
    shed_after_s: float | None = 0.3
    """Live frames older than this make their stale windows be skipped (None: never)."""
    timeline_slots: int = 36_000
    """How many slots back an event can still be mapped to the source (10 min at 60 Hz)."""

    def __post_init__(self) -> None:
        if not self.max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0, got {self.max_gap_s}")
        if self.shed_after_s is not None and not self.shed_after_s > 0:
            raise ValueError(f"shed_after_s must be > 0 or None, got {self.shed_after_s}")


class Phase(Protocol):
    """A stage a session starts with, composed onto a spotter with ``Spotter.start_phase``.

    The hooks run on the infer thread; ``running``, ``skip`` and ``state`` may be called from
    any thread (a viewer)."""

    @property
    def running(self) -> bool:
        """Whether the phase still holds the session (False once it ended in any way)."""
        ...

    def skip(self) -> None:
        """End the phase at the next frame (a viewer's button)."""
        ...

    def state(self) -> dict[str, Any]:
        """What a viewer shows of the phase (JSON-ready)."""
        ...

    def before(self, spotter: Spotter, frame: Frame) -> list[SpotEvent]:
        """Before ``frame`` is consumed: events to emit first; raising stops the stream."""
        ...

    def after(self, spotter: Spotter, frame: Frame, events: list[SpotEvent]) -> list[SpotEvent]:
        """After: the frame's events -> what is emitted."""
        ...

    def at_end(
        self, spotter: Spotter, events: list[SpotEvent], interrupted: bool
    ) -> list[SpotEvent]:
        """The stream ended (or was interrupted): its last events -> what is emitted; raising
        reports that the stream ended too early for the phase."""
        ...


class Spotter:
    """One stream: tracker -> resampler -> per-slot features -> ring -> engine -> merger ->
    events. ``track`` belongs to one thread, everything else to another (module docstring)."""

    def __init__(
        self,
        engine: Engine,
        merger_cfg: MergerConfig,
        stride_frames: int = 8,
        *,
        config: SpotterConfig | None = None,
        stream: str = "0",
        tracker: FaceTracker | None = None,
        clock: Clock = time.monotonic_ns,
        stats: StageStats | None = None,
    ) -> None:
        self.engine = engine
        self.stride_frames = stride_frames
        self.config = config or SpotterConfig()
        self.stream = stream
        self.tracker = tracker if tracker is not None else FaceTracker()
        self.clock = clock
        self.stats = stats or StageStats()
        self.window_frames = engine.window_frames
        self._check_window(merger_cfg)
        self.fps = merger_cfg.fps
        self.counters: collections.Counter[str] = collections.Counter()
        self.features = SlotFeatures(engine, self.stats, self.counters)
        # Room for the newest window plus every slot one frame can add (<= max_gap_s) plus a
        # stride: the windows made ready by one frame stay valid views until they are scored.
        max_slots_per_frame = math.ceil(self.config.max_gap_s * self.fps) + 2
        capacity = self.window_frames + stride_frames + max_slots_per_frame
        self.ring = FeatureRing(capacity, self.features.arrays())
        self.timeline = SlotTimeline(self.config.timeline_slots,
                                     N_REGIONS if engine.geometry is not None else 0)
        self.resampler: Resampler[Feed] = Resampler(self.fps)
        self.scheduler = WindowScheduler(self.window_frames, stride_frames)
        self.merger = IntervalMerger(merger_cfg)
        self.events = EventAssembler(stream)
        self.phase: Phase | None = None
        self.segment = 0
        self._observers: list[Observer] = []
        self._last_frame: Frame | None = None
        self._same_image: tuple[np.ndarray, float] | None = None  # (image, first pts seen)
        self._frozen = False
        self._shed_reported_pts: float | None = None

    def _check_window(self, cfg: MergerConfig) -> None:
        if cfg.window_frames != self.window_frames:
            raise ConfigError(
                f"merger config window_frames {cfg.window_frames} != the engine's "
                f"{self.window_frames} (load both with fesnet.model.runtime.load_runtime)"
            )

    # -- composition ---------------------------------------------------------------------------
    def add_observer(self, observer: Observer) -> Observer:
        """Attach an observer (realtime/observers.py); it is told the merger config at once."""
        self._observers.append(observer)
        observer.on_merger_config(self.merger.cfg)
        return observer

    def start_phase(self, phase: Phase) -> Phase:
        """Start the session with ``phase`` (before the first frame)."""
        if self.counters["frames"]:
            raise RuntimeError("a phase starts the session: attach it before the first frame")
        self.phase = phase
        return phase

    @property
    def merger_config(self) -> MergerConfig:
        return self.merger.cfg

    def use_merger_config(self, cfg: MergerConfig) -> None:
        """Merge with ``cfg`` from now on; only between segments (nothing of the old settings
        may be half-merged)."""
        self._check_window(cfg)
        if self.merger.next_commit_slot is not None:
            raise RuntimeError("change the merger config between segments (end_segment first)")
        self.merger = IntervalMerger(cfg)
        for obs in self._observers:
            obs.on_merger_config(cfg)

    @property
    def last_frame(self) -> Frame | None:
        """The newest frame fed to the current segment (None at its start)."""
        return self._last_frame

    # -- align role ----------------------------------------------------------------------------
    def track(self, frame: Frame) -> TrackResult:
        """Face detection and alignment of one raw frame (touches only the tracker)."""
        if frame.decode_s is not None:
            self.stats.add("decode", frame.decode_s)
        t0 = time.perf_counter()
        tracked = self.tracker.update(frame)
        self.stats.add("align", time.perf_counter() - t0)
        return tracked

    # -- infer role ----------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[SpotEvent]:
        """A raw BGR source frame -> events (both roles, on one thread)."""
        return self.consume(frame, self.track(frame))

    def consume(self, frame: Frame, tracked: TrackResult) -> list[SpotEvent]:
        """Everything after alignment: a tracked frame -> events (frames in source order)."""
        phase = self.phase
        events = phase.before(self, frame) if phase is not None else []
        self.counters["frames"] += 1
        events += self._check_frozen(frame)
        events += [self.events.face(c, frame.t_capture_ns) for c in tracked.changes]
        if tracked.segment_ended:
            self.counters["faces_lost"] += 1
            events += self.end_segment()
        for feed in tracked.feed:
            events += self.push(feed)
        if phase is not None:
            events = phase.after(self, frame, events)
        for obs in self._observers:
            obs.on_frame(frame, tracked)
        return events

    def push_crop(
        self, frame: Frame, crop: np.ndarray, crop_index: int | None = None
    ) -> list[SpotEvent]:
        """An aligned (112, 112, 3) RGB crop standing for source ``frame`` -> events."""
        return self.push(Feed(frame, crop, frame.index if crop_index is None else crop_index))

    def push(self, feed: Feed) -> list[SpotEvent]:
        """One fed crop (a tracker's :class:`Feed`) -> events."""
        frame = feed.frame
        events: list[SpotEvent] = []
        last = self._last_frame
        jump = 0.0 if last is None else frame.pts_s - last.pts_s
        if jump > self.config.max_gap_s:
            message = f"source gap of {jump:.2f} s; timeline restarted"
            events.append(self.events.status(frame, message))
            events += self.end_segment()
        elif jump < -self.config.max_gap_s:
            message = f"source clock went back {-jump:.2f} s; timeline restarted"
            events.append(self.events.status(frame, message))
            events += self.end_segment()
        elif last is not None and jump <= 0:
            self.counters["frames_out_of_order"] += 1
            return events
        self._last_frame = frame
        for slot, item in self.resampler.push(frame.pts_s, feed):
            self._add_slot(slot, item, frame.t_capture_ns)
        # Every window this frame made ready at once (the ring holds them all: see __init__).
        events += self._run_windows(self.scheduler.on_slots(self.ring.n_slots))
        return events

    def _check_frozen(self, frame: Frame) -> list[SpotEvent]:
        """A ``status`` event when the source has sent the identical image for
        ``frozen_after_s`` (a hung camera driver repeats its last buffer), and when it moves again.
        """
        image, same = frame.image, self._same_image
        if same is not None and same[0].shape == image.shape and np.array_equal(same[0], image):
            held_s = frame.pts_s - same[1]
            if not self._frozen and held_s >= self.config.frozen_after_s:
                self._frozen = True
                self.counters["frozen"] += 1
                message = f"camera frozen: the same image for {held_s:.1f} s"
                return [self.events.status(frame, message)]
            return []
        self._same_image = (image, frame.pts_s)
        if self._frozen:
            self._frozen = False
            return [self.events.status(frame, "camera image changing again")]
        return []

    def _add_slot(self, slot: int, feed: Feed, t_ready_ns: int) -> None:
        meta = SlotMeta(self.resampler.slot_time(slot), feed.frame.index, t_ready_ns)
        values = self.features.compute(feed)
        n = self.ring.append(values)
        geom = values.get(GEOMETRY)
        self.timeline.append(meta, None if geom is None else geom[RMS])
        assert n == slot, (n, slot)
        self.counters["slots"] += 1

    # -- windows -------------------------------------------------------------------------------
    def requests(self, starts: Sequence[int]) -> list[WindowRequest]:
        """Ready windows as engine requests (views into the ring: score them before more slots
        arrive)."""
        t = self.window_frames
        return [WindowRequest(self.stream, s, self.ring.window(s, t)) for s in starts]

    def _behind(self) -> bool:
        """The newest frame is live and was captured more than ``shed_after_s`` ago."""
        last, limit = self._last_frame, self.config.shed_after_s
        if limit is None or last is None or not last.live:
            return False
        return (self.clock() - last.t_capture_ns) / 1e9 > limit

    def _skip_window(self) -> list[SpotEvent]:
        self.counters["windows_skipped"] += 1
        last = self._last_frame
        assert last is not None
        reported = self._shed_reported_pts
        if reported is not None and 0.0 <= last.pts_s - reported < 10.0:
            return []
        self._shed_reported_pts = last.pts_s
        n = self.counters["windows_skipped"]
        message = f"falling behind: {n} stale windows skipped so far (frames are dropped too)"
        return [self.events.status(last, message)]

    def _run_windows(self, starts: Sequence[int]) -> list[SpotEvent]:
        events: list[SpotEvent] = []
        reqs = self.requests(starts)
        for i, req in enumerate(reqs):  # one at a time, as offline spotting scores them
            if i < len(reqs) - 1 and self._behind():  # the newest window is always scored
                events += self._skip_window()
                continue
            t0 = time.perf_counter()
            (probs,) = self.engine.step([req])
            self.stats.add("window", time.perf_counter() - t0)
            events += [self.events.status(self._last_frame, m) for m in self.engine.take_notices()]
            events += self.apply(req.start_slot, probs)
        return events

    def apply(self, start_slot: int, probs: np.ndarray) -> list[SpotEvent]:
        """One scored window -> merger -> events (what a multi-stream batcher calls per result)."""
        t_trigger_ns = self.timeline.meta(start_slot + self.window_frames - 1).t_capture_ns
        self.stats.add("frame_score_latency", (self.clock() - t_trigger_ns) / 1e9)
        self.counters["windows"] += 1
        for obs in self._observers:
            obs.on_window(self.segment, start_slot, probs)
        t0 = time.perf_counter()
        merged = self.merger.update(start_slot, probs)
        self._drain()
        self.stats.add("merge", time.perf_counter() - t0)
        return self._expressions(merged, t_trigger_ns)

    def _expressions(self, merged: list[MergerEvent], t_trigger_ns: int) -> list[SpotEvent]:
        for m in merged:
            self.counters[f"expression_{m.state}"] += 1
        return [self.events.expression(m, self.timeline, t_trigger_ns) for m in merged]

    def _drain(self) -> None:
        first, scores = self.merger.drain_committed()
        if len(scores) == 0 or not self._observers:
            return
        metas = [self.timeline.meta(s) for s in range(first, first + len(scores))]
        pts = np.array([m.pts_s for m in metas])
        source_index = np.array([m.source_index for m in metas], np.int64)
        for obs in self._observers:
            obs.on_committed(pts, source_index, scores)

    # -- segments ------------------------------------------------------------------------------
    def _t_ready_ns(self) -> int:
        last = self._last_frame
        return last.t_capture_ns if last is not None else self.clock()

    def end_segment(self) -> list[SpotEvent]:
        """End the current slot timeline like the end of a stream, then start a new one."""
        t_ready = self._t_ready_ns()
        events: list[SpotEvent] = []
        for slot, item in self.resampler.flush():
            self._add_slot(slot, item, t_ready)
        events += self._run_windows(self.scheduler.on_slots(self.ring.n_slots))
        events += self._run_windows(self.scheduler.on_end(self.ring.n_slots))
        merged = self.merger.flush()
        self._drain()
        events += self._expressions(merged, t_ready)
        self._reset_timeline()
        return events

    def interrupt(self) -> list[SpotEvent]:
        """Stop early: close an open interval as "interrupted" (nothing uncommitted is scored)."""
        t_ready = self._t_ready_ns()
        merged = self.merger.interrupt()
        self._drain()
        events = self._expressions(merged, t_ready)
        self._reset_timeline()
        return events if self.phase is None else self.phase.at_end(self, events, True)

    def finish(self) -> list[SpotEvent]:
        """End of stream."""
        events = self.end_segment()
        return events if self.phase is None else self.phase.at_end(self, events, False)

    def _reset_timeline(self) -> None:
        self.ring.reset()
        self.timeline.reset()
        self.resampler.reset()
        self.scheduler.reset()
        self.merger.reset()
        self.features.reset()
        self.events.new_segment()
        self._last_frame = None
        self.segment += 1
