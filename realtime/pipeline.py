"""One stream's spotting state (:class:`Spotter`) and the threaded live driver (:class:`Pipeline`).

Per source frame, on two pipeline threads (the source decodes on a third):

    align thread:  FaceTracker (mediapipe landmarks -> similarity crop, face states)
      -> a 2-frame hand-over queue (in order; full = backpressure on the source) ->
    infer thread:  Resampler (60 Hz slots by timestamp; a 30 FPS frame fills 2 slots, a 200 FPS
         file is subsampled) -> FeatureRing (encoder once per distinct crop; a duplicated slot
         reuses the features) -> WindowScheduler (every ``stride`` slots, as offline
         ``window_starts``)
      -> Engine.step (window head) -> IntervalMerger.update -> SpotEvents -> sinks.

Segments. The slot timeline restarts (ring, resampler, scheduler and merger reset) when the face
is lost or the source clock jumps by more than ``max_gap_s`` (forwards, or backwards: a camera
clock reset or a replay restarting at 0): the segment is ended exactly like the end of a stream
(resampler flush, tail window, ``merger.flush()``), so no window ever spans a gap and a segment is
spotted exactly as offline spotting of the same crops would. A frame at most ``max_gap_s`` older
than the newest one (reordered or repeated) is skipped and counted (``frames_out_of_order``).
A camera that keeps delivering the identical image for ``frozen_after_s`` gets a ``status`` event
(and another when the image changes again); its frames are still spotted. Stopping early
(SIGINT, ``stop()``) instead calls ``merger.interrupt()``: an open interval is closed as
"interrupted".

Overload. Window work is per 60 Hz slot, not per source frame: dropping frames at a live source
does not shed it (the next frame fills every slot since the last one and makes several windows
ready at once, which takes longer, so more frames drop: latency grows). So when a live stream is
behind (the frame that made windows ready was captured more than ``shed_after_s`` ago), only the
newest of those windows is scored; the older, stale ones are skipped and counted
(``windows_skipped``, and a ``status`` event at most every 10 s). The merger commits slots no
window covered as neutral. Files read at full speed never skip (offline equality).
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fesnet.model.backends import Backend
from fesnet.model.data.resample import Resampler
from fesnet.model.merger import IntervalMerger, MergerConfig, MergerEvent

from .engine import Engine, WindowScheduler
from .events import Sink
from .ring import FeatureRing, SlotTimeline
from .sources import Source
from .tracking import NO_FACE, FaceTracker, TrackerConfig, TrackResult
from .types import LABEL_NAMES, Frame, SlotMeta, SpotEvent, WindowRequest

logger = logging.getLogger(__name__)

HANDOVER_FRAMES = 2  # aligned frames waiting for the infer thread

STAGES = ("decode", "align", "encode", "window", "merge", "emit")


class PipelineError(RuntimeError):
    """The align+infer worker failed; the original exception is the cause."""


class StageStats:
    """Per-stage durations (bounded history) with percentiles. Thread-safe."""

    def __init__(self, maxlen: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, collections.deque[float]] = {}
        self.maxlen = maxlen

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            d = self._data.get(stage)
            if d is None:
                d = self._data[stage] = collections.deque(maxlen=self.maxlen)
            d.append(seconds)

    def extend(self, stage: str, seconds: Iterable[float]) -> None:
        for s in list(seconds):
            self.add(stage, s)

    def values_ms(self, stage: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._data.get(stage, ()), np.float64) * 1e3

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {n, mean_ms, p50_ms, p95_ms, p99_ms, max_ms}} for every stage seen."""
        with self._lock:
            names = list(self._data)
        out = {}
        for name in names:
            v = self.values_ms(name)
            if len(v) == 0:
                continue
            p50, p95, p99 = np.percentile(v, [50, 95, 99])
            out[name] = {
                "n": len(v),
                "mean_ms": float(v.mean()),
                "p50_ms": float(p50),
                "p95_ms": float(p95),
                "p99_ms": float(p99),
                "max_ms": float(v.max()),
            }
        return out


@dataclass
class _Item:
    frame: Frame
    crop: np.ndarray
    crop_index: int


@dataclass
class ScoreLog:
    """Committed per-slot fused scores of a whole run (for plots and offline comparison)."""

    pts_s: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    source_index: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.scores:
            return np.zeros(0), np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
        return (
            np.concatenate(self.pts_s),
            np.concatenate(self.scores),
            np.concatenate(self.source_index),
        )


class Spotter:
    """One stream: tracker -> resampler -> ring -> engine -> merger -> events. Not thread-safe:
    one thread drives it; :meth:`snapshot_state` is the thread-safe read side for viewers."""

    def __init__(
        self,
        engine: Engine,
        merger_cfg: MergerConfig,
        stride_frames: int = 8,
        stream: str = "0",
        tracker: FaceTracker | None = None,
        max_gap_s: float = 0.5,
        record_scores: bool = False,
        stats: StageStats | None = None,
        recent_slots: int = 600,
        frozen_after_s: float = 2.0,
        shed_after_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.shed_after_s = shed_after_s
        self._shed_reported_pts: float | None = None
        self.frozen_after_s = frozen_after_s
        self._same_image: tuple[np.ndarray, float] | None = None  # (image, first pts seen)
        self._frozen = False
        self.cfg = merger_cfg
        self.stride_frames = stride_frames
        self.stream = stream
        self.tracker = tracker
        self.max_gap_s = max_gap_s
        self.stats = stats or StageStats()
        self.window_frames = merger_cfg.window_frames
        self.fps = merger_cfg.fps
        xp_shape, xa_shape = engine.probe_shapes()
        # Room for the newest window plus every slot one frame can add (<= max_gap_s) plus a
        # stride: the windows made ready by one frame stay valid views until they are scored.
        max_slots_per_frame = math.ceil(max_gap_s * self.fps) + 2
        self.ring = FeatureRing(
            self.window_frames + stride_frames + max_slots_per_frame, xp_shape, xa_shape
        )
        self.timeline = SlotTimeline()
        self.resampler: Resampler[_Item] = Resampler(self.fps)
        self.scheduler = WindowScheduler(self.window_frames, stride_frames)
        self.merger = IntervalMerger(merger_cfg)
        self.score_log = ScoreLog() if record_scores else None
        self._feat_key: tuple[int, int] | None = None
        self._feat: tuple[np.ndarray, np.ndarray] | None = None
        self._event_ids: dict[int, int] = {}
        self._next_event_id = 0
        self._last_frame: Frame | None = None
        self.segment = 0
        self.counters = collections.Counter()
        self._lock = threading.Lock()
        self._recent: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=recent_slots
        )
        self._latest_crop: np.ndarray | None = None
        self._state = NO_FACE if tracker is not None else "tracking"
        self._n_faces = 0

    # -- per frame -------------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[SpotEvent]:
        """A raw BGR source frame -> events (tracking + everything after it), on one thread."""
        return self.consume(frame, self.track(frame))

    def track(self, frame: Frame) -> TrackResult:
        """The align stage: face detection and alignment of one raw frame. It touches only the
        tracker, so a Pipeline runs it on its own thread, one frame ahead of :meth:`consume`."""
        if self.tracker is None:
            raise RuntimeError("this Spotter has no tracker; use push_crop()")
        t0 = time.perf_counter()
        tr = self.tracker.update(frame)
        self.stats.add("align", time.perf_counter() - t0)
        return tr

    def consume(self, frame: Frame, tr: TrackResult) -> list[SpotEvent]:
        """Everything after alignment: a tracked frame -> events (frames in source order)."""
        self.counters["frames"] += 1
        events = self._check_frozen(frame)
        events += [self._stamp(e, frame.t_capture_ns) for e in tr.events]
        if tr.segment_ended:
            self.counters["faces_lost"] += 1
            events += self.end_segment()
        for feed in tr.feed:
            events += self.push_crop(feed.frame, feed.crop, feed.crop_index)
        with self._lock:
            self._state, self._n_faces = tr.state, tr.n_faces
            if tr.crop is not None:
                self._latest_crop = tr.crop
        return events

    def _check_frozen(self, frame: Frame) -> list[SpotEvent]:
        """A ``status`` event when the source has sent the identical image for
        ``frozen_after_s`` (a hung camera driver repeats its last buffer), and when it moves again.
        """
        image, same = frame.image, self._same_image
        if same is not None and same[0].shape == image.shape and np.array_equal(same[0], image):
            if not self._frozen and frame.pts_s - same[1] >= self.frozen_after_s:
                self._frozen = True
                self.counters["frozen"] += 1
                return [self._status(frame, f"camera frozen: the same image for "
                                            f"{frame.pts_s - same[1]:.1f} s")]  # fmt: skip
            return []
        self._same_image = (image, frame.pts_s)
        if self._frozen:
            self._frozen = False
            return [self._status(frame, "camera image changing again")]
        return []

    def _status(self, frame: Frame, message: str) -> SpotEvent:
        return SpotEvent(
            type="status",
            stream=self.stream,
            t_s=frame.pts_s,
            onset_frame=frame.index,
            message=message,
            t_trigger_ns=frame.t_capture_ns,
        )

    def push_crop(
        self, frame: Frame, crop: np.ndarray, crop_index: int | None = None
    ) -> list[SpotEvent]:
        """An aligned (112, 112, 3) RGB crop standing for source ``frame`` -> events."""
        events: list[SpotEvent] = []
        last = self._last_frame
        jump = 0.0 if last is None else frame.pts_s - last.pts_s
        if jump > self.max_gap_s:
            events.append(self._status(frame, f"source gap of {jump:.2f} s; timeline restarted"))
            events += self.end_segment()
        elif jump < -self.max_gap_s:
            message = f"source clock went back {-jump:.2f} s; timeline restarted"
            events.append(self._status(frame, message))
            events += self.end_segment()
        elif last is not None and jump <= 0:
            self.counters["frames_out_of_order"] += 1
            return events
        self._last_frame = frame
        key = frame.index if crop_index is None else crop_index
        item = _Item(frame, crop, key)
        for slot, it in self.resampler.push(frame.pts_s, item):
            self._add_slot(slot, it, frame.t_capture_ns)
        # Every window this frame made ready at once (the ring holds them all: see __init__).
        events += self._run_windows(self.scheduler.on_slots(self.ring.n_slots))
        return events

    def _add_slot(self, slot: int, item: _Item, t_ready_ns: int) -> None:
        key = (self.segment, item.crop_index)
        if key != self._feat_key or self._feat is None:
            t0 = time.perf_counter()
            xp, xa = self.engine.encode(item.crop[None])
            self.stats.add("encode", time.perf_counter() - t0)
            self._feat_key, self._feat = key, (xp[0], xa[0])
            self.counters["encoded"] += 1
        meta = SlotMeta(self.resampler.slot_time(slot), item.frame.index, t_ready_ns)
        n = self.ring.append(meta, self._feat[0], self._feat[1], item.crop)
        self.timeline.append(meta)
        assert n == slot, (n, slot)
        self.counters["slots"] += 1

    # -- windows -------------------------------------------------------------------------------
    def requests(self, starts: Sequence[int]) -> list[WindowRequest]:
        """Ready windows as engine requests (views into the ring: score them before more slots
        arrive)."""
        t = self.window_frames
        out = []
        for s in starts:
            xp, xa = self.ring.window(s, t)
            crops = self.ring.window_crops(s, t) if self.engine.needs_crops else None
            out.append(WindowRequest(self.stream, s, xp[0], xa[0], crops))
        return out

    def _behind(self) -> bool:
        """A live stream whose newest frame was captured more than ``shed_after_s`` ago."""
        last = self._last_frame
        if self.shed_after_s is None or last is None:
            return False
        return (time.monotonic_ns() - last.t_capture_ns) / 1e9 > self.shed_after_s

    def _skip_window(self) -> list[SpotEvent]:
        self.counters["windows_skipped"] += 1
        last = self._last_frame
        assert last is not None
        reported = self._shed_reported_pts
        if reported is not None and 0.0 <= last.pts_s - reported < 10.0:
            return []
        self._shed_reported_pts = last.pts_s
        n = self.counters["windows_skipped"]
        return [self._status(last, f"falling behind: {n} stale windows skipped so far "
                                   "(frames are dropped too)")]  # fmt: skip

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
            events += self.apply(req.start_slot, probs)
        return events

    def apply(self, start_slot: int, probs: np.ndarray) -> list[SpotEvent]:
        """One scored window -> merger -> events (what a multi-stream batcher calls per result)."""
        t_trigger_ns = self.ring.meta(start_slot + self.window_frames - 1).t_capture_ns
        self.stats.add("frame_score_latency", (time.monotonic_ns() - t_trigger_ns) / 1e9)
        self.counters["windows"] += 1
        t0 = time.perf_counter()
        merged = self.merger.update(start_slot, probs)
        self._drain()
        self.stats.add("merge", time.perf_counter() - t0)
        return [self._to_event(m, t_trigger_ns) for m in merged]

    def _drain(self) -> None:
        first, scores = self.merger.drain_committed()
        if len(scores) == 0:
            return
        slots = np.arange(first, first + len(scores))
        metas = [self.timeline.meta(int(s)) for s in slots]
        pts = np.array([m.pts_s for m in metas])
        with self._lock:
            for t, p in zip(pts, scores, strict=True):
                self._recent.append((float(t), float(p[1]), float(p[2])))
        if self.score_log is not None:
            self.score_log.pts_s.append(pts)
            self.score_log.scores.append(scores.copy())
            self.score_log.source_index.append(np.array([m.source_index for m in metas]))

    # -- segments ------------------------------------------------------------------------------
    def end_segment(self) -> list[SpotEvent]:
        """End the current slot timeline like the end of a stream, then start a new one."""
        last = self._last_frame
        t_ready = last.t_capture_ns if last is not None else time.monotonic_ns()
        events: list[SpotEvent] = []
        for slot, it in self.resampler.flush():
            self._add_slot(slot, it, t_ready)
        events += self._run_windows(self.scheduler.on_slots(self.ring.n_slots))
        events += self._run_windows(self.scheduler.on_end(self.ring.n_slots))
        merged = self.merger.flush()
        self._drain()
        events += [self._to_event(m, t_ready) for m in merged]
        self._reset_timeline()
        return events

    def interrupt(self) -> list[SpotEvent]:
        """Stop early: close an open interval as "interrupted" (nothing uncommitted is scored)."""
        last = self._last_frame
        t_ready = last.t_capture_ns if last is not None else time.monotonic_ns()
        merged = self.merger.interrupt()
        self._drain()
        events = [self._to_event(m, t_ready) for m in merged]
        self._reset_timeline()
        return events

    def finish(self) -> list[SpotEvent]:
        """End of stream."""
        return self.end_segment()

    def _reset_timeline(self) -> None:
        self.ring.reset()
        self.timeline.reset()
        self.resampler.reset()
        self.scheduler.reset()
        self.merger.reset()
        self._event_ids.clear()
        self._feat_key = self._feat = None
        self._last_frame = None
        self.segment += 1

    # -- events --------------------------------------------------------------------------------
    def _stamp(self, event: SpotEvent, t_trigger_ns: int) -> SpotEvent:
        event.t_trigger_ns = t_trigger_ns
        return event

    def _to_event(self, m: MergerEvent, t_trigger_ns: int) -> SpotEvent:
        on = self.timeline.meta(m.onset_slot)
        apex = self.timeline.meta(m.apex_slot)
        off = self.timeline.meta(m.offset_slot) if m.offset_slot is not None else None
        if m.state == "onset":
            event_id = self._next_event_id
            self._next_event_id += 1
            self._event_ids[m.onset_slot] = event_id
        else:
            event_id = self._event_ids.pop(m.onset_slot, None)
            if event_id is None:
                event_id = self._next_event_id
                self._next_event_id += 1
        self.counters[f"expression_{m.state}"] += 1
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
            event_id=event_id,
            t_trigger_ns=t_trigger_ns,
        )

    # -- viewers -------------------------------------------------------------------------------
    def snapshot_state(self) -> dict[str, Any]:
        with self._lock:
            recent = np.array(self._recent, np.float64).reshape(-1, 3)
            crop = None if self._latest_crop is None else self._latest_crop.copy()
            return {
                "state": self._state,
                "n_faces": self._n_faces,
                "latest_crop": crop,
                "recent_pts_s": recent[:, 0],
                "recent_me": recent[:, 1],
                "recent_mae": recent[:, 2],
            }


@dataclass
class Snapshot:
    """What a viewer may read at any time (copies; safe across threads)."""

    stream: str
    state: str
    n_faces: int
    latest_crop: np.ndarray | None
    recent_pts_s: np.ndarray
    recent_me: np.ndarray
    recent_mae: np.ndarray
    frames: int
    dropped: int
    fps: float
    latency_p50_ms: float | None
    recent_events: list[SpotEvent]
    running: bool


FrameSink = Callable[[Frame, TrackResult, Spotter], None]


class Pipeline:
    """Source thread + align thread + infer thread for one stream; events go to ``sinks``.

    Alignment (mediapipe) and the encoder each cost ~5 ms per frame on one core here; on their own
    threads they overlap, so a stream is limited by the slower stage rather than by their sum.
    ``Spotter.track`` runs on the align thread, ``Spotter.consume`` on the infer thread; the queue
    between them keeps source order and holds at most ``HANDOVER_FRAMES``.

    ``backend`` is a :class:`~fesnet.model.backends.Backend` or an :class:`Engine`. ``aligner``:
    a FaceAligner-like object (one is created on the worker thread if None). ``frame_sinks`` see
    every processed frame with its tracking result (annotated video output).
    """

    def __init__(
        self,
        source: Source,
        backend: Backend | Engine,
        merger_cfg: MergerConfig,
        stride_frames: int = 8,
        sinks: Sequence[Sink] = (),
        *,
        engine_mode: str = "cached",
        aligner: Any = None,
        tracker_config: TrackerConfig | None = None,
        frame_sinks: Sequence[FrameSink] = (),
        record_scores: bool = False,
        max_gap_s: float = 0.5,
        shed_after_s: float = 0.3,
    ) -> None:
        self.source = source
        self.engine = (
            backend
            if isinstance(backend, Engine)
            else Engine(backend, merger_cfg.window_frames, mode=engine_mode)
        )
        self.merger_cfg = merger_cfg
        self.stride_frames = stride_frames
        self.sinks = list(sinks)
        self.frame_sinks = list(frame_sinks)
        self.stats = StageStats()
        self.stream = source.stream
        self._aligner = aligner
        self._own_aligner = aligner is None
        self.tracker_config = tracker_config or TrackerConfig()
        self.spotter = Spotter(
            self.engine,
            merger_cfg,
            stride_frames,
            stream=self.stream,
            tracker=None,
            max_gap_s=max_gap_s,
            record_scores=record_scores,
            stats=self.stats,
            shed_after_s=shed_after_s if source.live else None,
        )
        self._stop = threading.Event()
        self._abort = threading.Event()  # one of the two threads failed: both end, no finish()
        self._thread: threading.Thread | None = None
        self._align_thread: threading.Thread | None = None
        self._tracked: queue.Queue[tuple[Frame, TrackResult] | None] = queue.Queue(
            maxsize=HANDOVER_FRAMES
        )
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._done = threading.Event()
        self._ready = threading.Event()
        self._recent_events: collections.deque[SpotEvent] = collections.deque(maxlen=50)
        self._frame_times: collections.deque[float] = collections.deque(maxlen=120)
        self.events_emitted = 0
        self.sink_errors = 0
        self._failed_sinks: set[int] = set()
        self._sink_lock = threading.Lock()
        self.interrupted = False
        self.t_start: float | None = None
        self.t_end: float | None = None
        self._joined = False
        source.on_status = self._source_status

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Pipeline:
        if self._thread is not None:
            return self
        self.t_start = time.monotonic()
        self._align_thread = threading.Thread(
            target=self._align_work, name=f"align-{self.stream}", daemon=True
        )
        self._thread = threading.Thread(target=self._work, name=f"spot-{self.stream}", daemon=True)
        self._align_thread.start()
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the worker has built its aligner and reads frames (mediapipe takes a
        moment to load; a live source drops frames meanwhile)."""
        return self._ready.wait(timeout) or self._done.is_set()

    def request_stop(self) -> None:
        """Ask the worker to stop after the current frame (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop now: open intervals are closed as "interrupted"; re-raises a worker's error."""
        self.request_stop()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end of the stream (or a stop). Re-raises the source's or the worker's
        first exception. Returns False if the worker is still running after ``timeout``."""
        if self._thread is None:
            raise RuntimeError("pipeline not started")
        if not self._done.wait(timeout):
            return False
        self._thread.join()
        if self._joined:
            return True
        self._joined = True
        try:
            self.source.stop()
        finally:
            err, self._error = self._error, None
            if err is not None:
                raise PipelineError(f"stream {self.stream}: {err!r}") from err
        return True

    def run(self) -> None:
        """start() + join(): process the whole source."""
        self.start()
        while not self.join(timeout=0.2):
            pass

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._done.is_set()

    # -- worker --------------------------------------------------------------------------------
    def _make_tracker(self) -> FaceTracker:
        if self._aligner is None:
            from fesnet.model.data.align import FaceAligner

            self._aligner = FaceAligner(crop_size=112, max_faces=2)
        return FaceTracker(self._aligner, self.tracker_config)

    def _align_work(self) -> None:
        """Align thread: source frames -> (frame, tracking result) into the hand-over queue."""
        try:
            self.spotter.tracker = self._make_tracker()
            # A live source starts only now: frames are not dropped while mediapipe loads.
            self.source.start()
            self._ready.set()
            while not (self._stop.is_set() or self._abort.is_set()):
                try:
                    frame = self.source.read(timeout=0.1)
                except TimeoutError:
                    continue
                if frame is None:
                    break
                self._hand_over((frame, self.spotter.track(frame)))
        except BaseException as e:
            self._fail(e)
        finally:
            if self._own_aligner and self._aligner is not None:
                self._aligner.close()
            self._hand_over(None)  # end of stream

    def _hand_over(self, item: tuple[Frame, TrackResult] | None) -> None:
        """Blocks while the infer thread is behind (backpressure: a live source then drops at
        its latest-only slot, as before); gives up once the pipeline stops or fails."""
        while not (self._stop.is_set() or self._abort.is_set()):
            try:
                self._tracked.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fail(self, e: BaseException) -> None:
        with self._error_lock:
            first = self._error is None
            if first:
                self._error = e
        if first:
            logger.error("stream %s: worker failed: %r", self.stream, e)
        self._abort.set()
        self.source.channel.cancel()  # release a producer waiting for room

    def _work(self) -> None:
        """Infer thread: tracked frames -> spotting -> events to the sinks."""
        try:
            while True:
                if self._stop.is_set():
                    self.interrupted = True
                    break
                if self._abort.is_set():
                    return
                try:
                    item = self._tracked.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    break
                frame, tr = item
                events = self.spotter.consume(frame, tr)
                self._emit(events)
                self._frame_times.append(time.monotonic())
                for fs in self.frame_sinks:
                    fs(frame, self._last_track(), self.spotter)
            if self._abort.is_set():  # the align thread failed after its last frame
                return
            if self.interrupted:
                self._emit(self.spotter.interrupt())
            else:
                self._emit(self.spotter.finish())
        except BaseException as e:
            self._fail(e)
        finally:
            assert self._align_thread is not None
            self._align_thread.join()
            self.t_end = time.monotonic()
            self._done.set()

    def _last_track(self) -> TrackResult:
        st = self.spotter.snapshot_state()
        return TrackResult([], st["state"], st["n_faces"], crop=st["latest_crop"])

    def _emit(self, events: Sequence[SpotEvent]) -> None:
        if not events:
            return
        t0 = time.perf_counter()
        for e in events:
            if e.t_trigger_ns is not None:
                e.latency_ms = (time.monotonic_ns() - e.t_trigger_ns) / 1e6
                if e.type == "expression":
                    self.stats.add("event_latency", e.latency_ms / 1e3)
            self._recent_events.append(e)
            self.events_emitted += 1
            for sink in self.sinks:
                self._call_sink(sink, e)
        self.stats.add("emit", time.perf_counter() - t0)

    def _call_sink(self, sink: Sink, event: SpotEvent) -> None:
        """One failing sink (a viewer gone, a closed stdout) must not stop the stream or starve
        the other sinks (the JSONL file): its errors are counted and the first one logged."""
        try:
            sink(event)
        except Exception as e:
            with self._sink_lock:
                self.sink_errors += 1
                first = id(sink) not in self._failed_sinks
                self._failed_sinks.add(id(sink))
            if first:
                logger.error("stream %s: sink %r failed (further errors counted): %r",
                             self.stream, sink, e)  # fmt: skip

    def _source_status(self, message: str) -> None:
        # Called on the source thread: sinks are called from there too, which the sink contract
        # (non-blocking, thread-safe) allows.
        last = self.spotter._last_frame
        self._emit(
            [
                SpotEvent(
                    type="status",
                    stream=self.stream,
                    t_s=last.pts_s if last is not None else 0.0,
                    message=f"source: {message}",
                    t_trigger_ns=time.monotonic_ns(),
                )
            ]
        )

    # -- read side -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        st = self.spotter.snapshot_state()
        times = list(self._frame_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        lat = self.stats.values_ms("frame_score_latency")
        return Snapshot(
            stream=self.stream,
            state=st["state"],
            n_faces=st["n_faces"],
            latest_crop=st["latest_crop"],
            recent_pts_s=st["recent_pts_s"],
            recent_me=st["recent_me"],
            recent_mae=st["recent_mae"],
            frames=self.spotter.counters["frames"],
            dropped=self.source.dropped,
            fps=fps,
            latency_p50_ms=float(np.median(lat[-200:])) if len(lat) else None,
            recent_events=list(self._recent_events),
            running=self.running,
        )

    def summary(self) -> dict[str, Any]:
        """Counters and per-stage timings of the run so far (the benchmark reads this)."""
        self.stats_from_source()
        c = self.spotter.counters
        wall = ((self.t_end or time.monotonic()) - self.t_start) if self.t_start else 0.0
        return {
            "stream": self.stream,
            "source": self.source.describe(),
            "frames": c["frames"],
            "frames_read": self.source.frames_read,
            "dropped": self.source.dropped,
            "slots": c["slots"],
            "encoded": c["encoded"],
            "windows": c["windows"],
            "windows_skipped": c["windows_skipped"],
            "faces_lost": c["faces_lost"],
            "segments": self.spotter.segment,
            "events": self.events_emitted,
            "sink_errors": self.sink_errors,
            "frames_out_of_order": c["frames_out_of_order"],
            "frozen": c["frozen"],
            "expressions_final": c["expression_final"],
            "interrupted": self.interrupted,
            "wall_s": wall,
            "fps": c["frames"] / wall if wall > 0 else 0.0,
            "stages": self.stats.summary(),
        }

    def stats_from_source(self) -> None:
        """Move the source thread's decode timings into the stage stats."""
        d = self.source.decode_s
        while d:
            try:
                self.stats.add("decode", d.popleft())
            except IndexError:
                break
