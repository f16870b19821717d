"""The one place a stream is put together: engine -> :class:`~.spotter.Spotter` ->
:class:`~.pipeline.Pipeline` over a source, its events to the sinks.

Every program that spots a stream goes through here: ``fesnet-spot run`` (one source, several
in this process, or each in a Ray actor), the viewers' sessions, the baseline recording of
``fesnet-calibrate``, the benchmarks, the soak script and the tests. So a stream is built the
same way everywhere, and a rule added to that construction reaches every one of them.

- :class:`StreamModel`: what every stream of one loaded model shares: one engine (an
  :class:`~.engine.Engine` over one backend, or a :class:`~.tier_engine.TierEngine`: the model
  tier, where every stream's features live where the model runs and the streams' crops and
  windows go in shared calls), the merger settings and the window stride, checked against each
  other once. ``StreamModel.of(runtime)`` for a model loaded by
  ``fesnet.model.runtime.load_runtime`` (the runtime's ``serving`` picks the engine);
  ``StreamModel.over(backend, merger, stride)`` for a bare backend (benchmarks of random
  weights, tests), ``StreamModel.on_tier(tier, ...)`` for a bare tier.
- :func:`open_spotter`: a spotter alone, for a driver that runs both roles on one thread
  (``Spotter.process``).
- :func:`open_stream` -> :class:`StreamRun`: the spotter on its threads over a source.
  ``start`` / ``run`` / ``stop`` / ``summary``; :func:`run_streams` is the one loop that waits
  for streams to end (polling, so a signal handler or a stop condition is seen within
  ``poll_s``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from fesnet.model.backends import Backend, split_post
from fesnet.model.geometry import GeometryConfig
from fesnet.model.merger import MergerConfig
from fesnet.model.runtime import Runtime, check_stride
from fesnet.model.tier import ModelTier
from fesnet.model.tier_serve import TierService

from .engine import Engine
from .observers import Observer
from .overload import Clock
from .pipeline import Pipeline
from .sinks import Sink
from .sources import Source
from .spotter import Phase, Spotter, SpotterConfig
from .stats import StageStats
from .tier_engine import SharedTier, TierEngine
from .tracking import FaceTracker

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

PhaseFactory = Callable[[Spotter], Phase]
"""The spotter of a new stream -> the phase its session starts with."""

DEFAULT_TIER_STREAMS = 16
"""Streams a tier in this process holds rings for, unless told (a CPU tier's rings are host
memory: 3.2 MB a stream in fp32)."""


@dataclass(frozen=True)
class StreamModel:
    """What every stream over one model shares: the engine, the merger settings, the stride."""

    engine: Engine | TierEngine
    merger: MergerConfig
    stride_frames: int

    def __post_init__(self) -> None:
        check_stride(self.stride_frames, self.engine.window_frames)

    @property
    def window_frames(self) -> int:
        return self.engine.window_frames

    @classmethod
    def of(
        cls, runtime: Runtime, mode: str = "cached", max_streams: int | None = None
    ) -> StreamModel:
        """The streams of a loaded model (its backend, merger config and stride), on the engine
        its ``serving`` names: the placement's model tier, a tier in this process for up to
        ``max_streams`` streams at once (the runtime's ``make_tier``), or an Engine. The naive
        engine mode (a benchmark's baseline) is an Engine's."""
        if mode == "cached" and runtime.serving == "tier":
            _, post = split_post(runtime.backend)
            geometry = getattr(runtime.backend, "geometry", None)
            if runtime.remote_tier is not None:
                engine: Engine | TierEngine = TierEngine(runtime.remote_tier,
                                                         runtime.window_frames, geometry,
                                                         post=post)
            else:
                tier = runtime.make_tier(max_streams or DEFAULT_TIER_STREAMS)
                engine = TierEngine(SharedTier(TierService(tier)), tier.window_frames, geometry,
                                    post=post)
            return cls(engine, runtime.merger, runtime.stride_frames)
        engine = Engine(runtime.backend, runtime.window_frames, mode)
        return cls(engine, runtime.merger, runtime.stride_frames)

    @classmethod
    def over(
        cls, backend: Backend, merger: MergerConfig, stride_frames: int, mode: str = "cached"
    ) -> StreamModel:
        """Streams over a bare backend; its windows are as long as ``merger`` says."""
        return cls(Engine(backend, merger.window_frames, mode), merger, stride_frames)

    @classmethod
    def on_tier(
        cls, tier: ModelTier, merger: MergerConfig, stride_frames: int, post: Backend | None = None
    ) -> StreamModel:
        """Streams sharing a bare model tier in this process (its geometry settings, or none);
        ``post``: a backend whose network the tier runs and whose post-processing is applied
        (``split_post``)."""
        _, window_post = split_post(post) if post is not None else (None, None)
        geometry = tier.geometry or (GeometryConfig() if tier.geometry_dims else None)
        engine = TierEngine(SharedTier(TierService(tier)), tier.window_frames, geometry,
                            post=window_post)
        return cls(engine, merger, stride_frames)

    def using(self, merger: MergerConfig, stride_frames: int) -> StreamModel:
        """The same engine with other settings (a benchmark comparing settings on one model)."""
        return dataclasses.replace(self, merger=merger, stride_frames=stride_frames)


class SpotterParts(TypedDict, total=False):
    """What a stream may be given besides its model and source (all optional)."""

    config: SpotterConfig | None
    """Gaps, frozen camera, shedding, timeline length (``SpotterConfig``'s defaults)."""
    tracker: FaceTracker | None
    """The face tracker (default: mediapipe's, made on the align thread)."""
    observers: Sequence[Observer]
    """Attached before the first frame (plots, viewers, recorders)."""
    phase: PhaseFactory | None
    """The phase the stream starts with (the neutral-baseline calibration)."""
    clock: Clock
    """The time that decides staleness and latencies (tests drive it)."""
    stats: StageStats | None
    """Timings kept in an object of the caller's (a benchmark that wants every sample)."""


def open_spotter(model: StreamModel, stream: str = "0", **parts: Unpack[SpotterParts]) -> Spotter:
    """A spotter over ``model``: observers attached, then the phase it starts with."""
    observers = parts.pop("observers", ())
    phase = parts.pop("phase", None)
    spotter = Spotter(model.engine, model.merger, model.stride_frames, stream=stream, **parts)
    for obs in observers:
        spotter.add_observer(obs)
    if phase is not None:
        spotter.start_phase(phase(spotter))
    return spotter


class StreamRun:
    """One stream put together: a spotter driven by a pipeline over ``source``. Thread-safe
    where the pipeline is (``request_stop`` even from a signal handler)."""

    def __init__(self, spotter: Spotter, pipeline: Pipeline) -> None:
        self._spotter = spotter
        self._pipeline = pipeline
        self.source = pipeline.source
        self.stream = spotter.stream

    @property
    def phase(self) -> Phase | None:
        return self._spotter.phase

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StreamRun:
        self._pipeline.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the aligner is loaded and the source reads frames (or the run ended)."""
        return self._pipeline.wait_ready(timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for the end; True once it ended. Re-raises a thread's first
        error as :class:`~.pipeline.PipelineError`."""
        return self._pipeline.join(timeout)

    def run(self, stop_when: Callable[[], bool] | None = None, poll_s: float = 0.2) -> None:
        """Start (if not started) and wait for the end; raises the run's error."""
        (error,) = run_streams([self], stop_when, poll_s)
        if error is not None:
            raise error

    def request_stop(self) -> None:
        """Stop after the current frame; open intervals close as "interrupted". Waits for
        nothing (safe from a signal handler)."""
        self._pipeline.request_stop()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop now and wait; re-raises a thread's error."""
        self._pipeline.stop(timeout)

    @property
    def started(self) -> bool:
        return self._pipeline.started

    @property
    def running(self) -> bool:
        return self._pipeline.running

    @property
    def ended(self) -> bool:
        """The stream ended by itself or was stopped (its threads are done)."""
        return self._pipeline.t_end is not None

    @property
    def interrupted(self) -> bool:
        return self._pipeline.interrupted

    # -- read side -----------------------------------------------------------------------------
    @property
    def events_emitted(self) -> int:
        return self._pipeline.events_emitted

    def status(self) -> dict[str, Any]:
        """Live numbers for a viewer (cheap, any thread)."""
        return {
            **self._spotter.status(),
            "fps": round(self._pipeline.frame_rate.rate(time.monotonic()), 2),
            "dropped": self.source.dropped,
            "events": self._pipeline.events_emitted,
            "running": self._pipeline.running,
        }

    def summary(self) -> dict[str, Any]:
        """The run so far: source, counts, per-stage timings, wall time."""
        return self._pipeline.summary()


def open_stream(
    model: StreamModel, source: Source, sinks: Sequence[Sink] = (), **parts: Unpack[SpotterParts]
) -> StreamRun:
    """``source`` spotted with ``model`` on its own threads, every event to every sink (each
    failing on its own). Not started: ``start()`` or ``run()``."""
    spotter = open_spotter(model, source.stream, **parts)
    return StreamRun(spotter, Pipeline(source, spotter, sinks))


def run_streams(
    runs: Sequence[StreamRun],
    stop_when: Callable[[], bool] | None = None,
    poll_s: float = 0.2,
) -> list[Exception | None]:
    """Start every run not yet started and wait until all have ended: the one waiting loop.
    Once ``stop_when()`` is true every run still going is asked to stop (open intervals close
    as "interrupted"). Returns each run's error in order (None: it ended normally); one
    stream's failure never stops the others."""
    for r in runs:
        if not r.started:
            r.start()
    errors: dict[int, Exception | None] = {}
    stopping = False
    while len(errors) < len(runs):
        if not stopping and stop_when is not None and stop_when():
            stopping = True
            for r in runs:
                r.request_stop()
        for i, r in enumerate(runs):
            if i in errors:
                continue
            try:
                if r.join(timeout=poll_s / len(runs)):
                    errors[i] = None
            except Exception as e:
                errors[i] = e
    return [errors[i] for i in range(len(runs))]
