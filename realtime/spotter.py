"""One stream's spotting state: :class:`Spotter`, a plain per-stream object with two roles.

Per source frame:

    track   (align role, the align thread): FaceTracker (mediapipe landmarks -> similarity crop,
            face states). It touches only the tracker.
    consume (infer role, the infer thread): Resampler (60 Hz slots by timestamp; a 30 FPS frame
            fills 2 slots, a 200 FPS file is subsampled) -> SlotFeatures (encoder once per
            distinct crop) -> FeatureRing + SlotTimeline -> WindowScheduler (every ``stride``
            slots, as offline ``window_starts``) -> the stream's scoring (window head: the
            engine's ``open_stream``; on the model tier the crops go there and are encoded
            there, realtime/tier_engine.py) -> IntervalMerger.update -> EventAssembler ->
            events.

``process(frame)`` runs both on one thread. :class:`~fesnet.realtime.pipeline.Pipeline` runs
``track`` and ``consume`` on two threads, one frame apart; the roles share only the thread-safe
``stats``. Time comes from an injected ``clock`` (``time.monotonic_ns`` by default): it decides
staleness and latencies, so tests can drive it.

Stream health. The rules about the source itself are small named parts beside the spotter, each
a module of its own: :class:`~.source_clock.SourceClock` (a source clock jump by more than
``max_gap_s``, forwards or backwards, ends the segment; a reordered or repeated frame is skipped
and counted), :class:`~.frozen.FrozenCamera` (the identical image for ``frozen_after_s`` is a
``status`` event, and so is its end) and :class:`~.overload.Overload` (a live stream that falls
behind skips its stale windows). The spotter only applies their verdicts.

Segments. The slot timeline restarts (ring, timeline, resampler, scheduler, merger and per-slot
features reset) when the face is lost or the source clock jumps: the segment is ended exactly
like the end of a stream (resampler flush, tail window, ``merger.flush()``), so no window ever
spans a gap and a segment is spotted exactly as offline spotting of the same crops would be.
Stopping early (SIGINT, ``stop()``) calls :meth:`Spotter.interrupt`: an open interval is closed
as "interrupted".

The public surface a driver uses: ``open`` / ``close`` (the tracker's aligner, on the align
thread), ``track`` / ``consume`` (the two roles), ``finish`` / ``interrupt``, ``emitted`` (events
leave: latency stamped), ``status_event`` (a message of the source), ``status`` (live numbers)
and ``summary`` (the run's counts and timings). Nothing else reaches into its parts.
Spotters are put together in one place only: realtime/session.py.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fesnet.model.data.resample import Resampler
from fesnet.model.geometry import N_REGIONS, RMS
from fesnet.model.merger import ConfigError, IntervalMerger, MergerConfig, MergerEvent

from .assembly import EventAssembler
from .engine import GEOMETRY, Engine, WindowScheduler
from .features import SlotFeatures
from .frozen import FrozenCamera
from .observers import Observer
from .overload import Clock, Overload
from .ring import FeatureRing, SlotTimeline
from .source_clock import SourceClock
from .stats import StageStats
from .tracking import FaceTracker, Feed, TrackResult
from .types import Frame, SlotMeta, SpotEvent

if TYPE_CHECKING:
    from .tier_engine import TierEngine

RECENT_LATENCIES = 200  # what a live status's latency medians are taken over


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
    events. ``track`` belongs to one thread, everything else to another (module docstring).
    Made by realtime/session.py (``open_spotter``, ``open_stream``), nowhere else."""

    def __init__(
        self,
        engine: Engine | TierEngine,
        merger_cfg: MergerConfig,
        stride_frames: int,
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
        self._tracker = tracker if tracker is not None else FaceTracker()
        self._clock = clock
        self._stats = stats or StageStats()
        self.window_frames = engine.window_frames
        self._check_window(merger_cfg)
        self.fps = merger_cfg.fps
        self._counters: collections.Counter[str] = collections.Counter()
        self.features = SlotFeatures(engine, self._stats, self._counters)
        self.scoring = engine.open_stream(stream)
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
        self._events = EventAssembler(stream)
        self._source_clock = SourceClock(self.config.max_gap_s)
        self._frozen = FrozenCamera(self.config.frozen_after_s)
        self._overload = Overload(self.config.shed_after_s, clock)
        self.phase: Phase | None = None
        self.segment = 0
        self._observers: list[Observer] = []
        self._last_frame: Frame | None = None

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
        if self._counters["frames"]:
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
    def open(self) -> None:
        """Make the tracker's aligner, on the thread that tracks (mediapipe takes a moment:
        a live source should start only after this)."""
        self._tracker.open()

    def close(self) -> None:
        """Release the tracker's aligner (on the thread that tracks)."""
        self._tracker.close()

    def track(self, frame: Frame) -> TrackResult:
        """Face detection and alignment of one raw frame (touches only the tracker)."""
        if frame.decode_s is not None:
            self._stats.add("decode", frame.decode_s)
        t0 = time.perf_counter()
        tracked = self._tracker.update(frame)
        self._stats.add("align", time.perf_counter() - t0)
        return tracked

    # -- infer role ----------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[SpotEvent]:
        """A raw BGR source frame -> events (both roles, on one thread)."""
        return self.consume(frame, self.track(frame))

    def consume(self, frame: Frame, tracked: TrackResult) -> list[SpotEvent]:
        """Everything after alignment: a tracked frame -> events (frames in source order)."""
        phase = self.phase
        events = phase.before(self, frame) if phase is not None else []
        self._counters["frames"] += 1
        frozen = self._frozen.check(frame)
        if frozen is not None:
            events.append(self._events.status(frame, frozen))
        events += [self._events.face(c, frame.t_capture_ns) for c in tracked.changes]
        if tracked.segment_ended:
            self._counters["faces_lost"] += 1
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
        step = self._source_clock.step(None if last is None else last.pts_s, frame.pts_s)
        if step.skip:
            return events
        if step.restart is not None:
            events.append(self._events.status(frame, step.restart))
            events += self.end_segment()
        self._last_frame = frame
        for slot, item in self.resampler.push(frame.pts_s, feed):
            self._add_slot(slot, item, frame.t_capture_ns)
        # Every window this frame made ready at once (the ring holds them all: see __init__).
        events += self._run_windows(self.scheduler.on_slots(self.ring.n_slots))
        return events

    def _add_slot(self, slot: int, feed: Feed, t_ready_ns: int) -> None:
        meta = SlotMeta(self.resampler.slot_time(slot), feed.frame.index, t_ready_ns)
        values = self.features.compute(feed)
        n = self.ring.append(values)
        geom = values.get(GEOMETRY)
        self.timeline.append(meta, None if geom is None else geom[RMS])
        assert n == slot, (n, slot)
        self._counters["slots"] += 1

    # -- windows -------------------------------------------------------------------------------
    def _run_windows(self, starts: Sequence[int]) -> list[SpotEvent]:
        events: list[SpotEvent] = []
        newest = self._last_frame
        for i, start in enumerate(starts):  # one at a time, as offline spotting scores them
            # the newest window is always scored
            if i < len(starts) - 1 and newest is not None and self._overload.behind(newest):
                message = self._overload.skip(newest)
                if message is not None:
                    events.append(self._events.status(newest, message))
                continue
            t0 = time.perf_counter()
            probs = self.scoring.score(start, self.ring)
            self._stats.add("window", time.perf_counter() - t0)
            events += [self._events.status(newest, m) for m in self.scoring.take_notices()]
            events += self.apply(start, probs)
        return events

    def apply(self, start_slot: int, probs: np.ndarray) -> list[SpotEvent]:
        """One scored window -> merger -> events (what a multi-stream batcher calls per result)."""
        t_trigger_ns = self.timeline.meta(start_slot + self.window_frames - 1).t_capture_ns
        self._stats.add("frame_score_latency", (self._clock() - t_trigger_ns) / 1e9)
        self._counters["windows"] += 1
        for obs in self._observers:
            obs.on_window(self.segment, start_slot, probs)
        t0 = time.perf_counter()
        merged = self.merger.update(start_slot, probs)
        self._drain()
        self._stats.add("merge", time.perf_counter() - t0)
        return self._expressions(merged, t_trigger_ns)

    def _expressions(self, merged: list[MergerEvent], t_trigger_ns: int) -> list[SpotEvent]:
        for m in merged:
            self._counters[f"expression_{m.state}"] += 1
        return [self._events.expression(m, self.timeline, t_trigger_ns) for m in merged]

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
        return last.t_capture_ns if last is not None else self._clock()

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
        self.scoring.close()
        return events if self.phase is None else self.phase.at_end(self, events, True)

    def finish(self) -> list[SpotEvent]:
        """End of stream."""
        events = self.end_segment()
        self.scoring.close()
        return events if self.phase is None else self.phase.at_end(self, events, False)

    def _reset_timeline(self) -> None:
        self.ring.reset()
        self.timeline.reset()
        self.resampler.reset()
        self.scheduler.reset()
        self.merger.reset()
        self.features.reset()
        self.scoring.reset()
        self._events.new_segment()
        self._last_frame = None
        self.segment += 1

    # -- what leaves the stream ----------------------------------------------------------------
    def status_event(
        self,
        message: str,
        frame: Frame | None = None,
        *,
        state: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> SpotEvent:
        """A ``status`` event about ``frame`` (a phase's); without one, about the newest frame
        of the segment and triggered now (a message of the source, from any thread)."""
        if frame is None:
            return self._events.status(self._last_frame, message, state=state, extra=extra,
                                       t_trigger_ns=self._clock())
        return self._events.status(frame, message, state=state, extra=extra)

    def emitted(self, events: Sequence[SpotEvent]) -> None:
        """``events`` leave the stream now: each gets its ``latency_ms`` from the spotter's
        clock (the one field set after assembly), and expression latencies are timed."""
        now = self._clock()
        for e in events:
            if e.t_trigger_ns is not None:
                e.latency_ms = (now - e.t_trigger_ns) / 1e6
                if e.type == "expression":
                    self._stats.add("event_latency", e.latency_ms / 1e3)

    def time_stage(self, stage: str, seconds: float) -> None:
        """Add a duration of a driver's own stage (the pipeline's emission) to the timings."""
        self._stats.add(stage, seconds)

    def status(self) -> dict[str, Any]:
        """Live numbers (cheap, any thread): counts so far and the recent latency medians."""
        score = self._stats.median_ms("frame_score_latency", last=RECENT_LATENCIES)
        event = self._stats.median_ms("event_latency", last=RECENT_LATENCIES)
        return {
            **self._counts(),
            "score_latency_p50_ms": None if score is None else round(score, 1),
            "event_latency_p50_ms": None if event is None else round(event, 1),
        }

    def summary(self) -> dict[str, Any]:
        """The run so far: counts and per-stage timings over the whole run."""
        return {**self._counts(), "stages": self._stats.summary()}

    def _counts(self) -> dict[str, Any]:
        c = self._counters
        return {
            "frames": c["frames"],
            "slots": c["slots"],
            "encoded": c["encoded"],
            "windows": c["windows"],
            "windows_skipped": self._overload.windows_skipped,
            "faces_lost": c["faces_lost"],
            "segments": self.segment,
            "frames_out_of_order": self._source_clock.out_of_order,
            "frozen": self._frozen.times_frozen,
            "expressions_final": c["expression_final"],
        }
