"""Building the streaming spotter in tests: a Spotter over any backend (or a shared Engine), and a
Pipeline that runs it on a source, with the tracker's aligner given (a stand-in, no mediapipe) or
made on the align thread (mediapipe)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fesnet.model.merger import MergerConfig
from fesnet.realtime.engine import Engine
from fesnet.realtime.events import Sink
from fesnet.realtime.observers import Observer
from fesnet.realtime.pipeline import Pipeline
from fesnet.realtime.sources import Source
from fesnet.realtime.spotter import Spotter
from fesnet.realtime.tracking import FaceTracker


def make_spotter(
    backend: Any,
    cfg: MergerConfig | None = None,
    stride: int = 8,
    *,
    aligner: Any = None,
    **kwargs: Any,
) -> Spotter:
    cfg = cfg or MergerConfig()
    engine = backend if isinstance(backend, Engine) else Engine(backend, cfg.window_frames)
    tracker = FaceTracker(aligner) if aligner is not None else None
    return Spotter(engine, cfg, stride, tracker=tracker, **kwargs)


def make_pipeline(
    source: Source,
    backend: Any,
    cfg: MergerConfig | None = None,
    stride: int = 8,
    sinks: Sequence[Sink] = (),
    *,
    aligner: Any = None,
    observers: Sequence[Observer] = (),
    **kwargs: Any,
) -> Pipeline:
    spotter = make_spotter(backend, cfg, stride, aligner=aligner, stream=source.stream, **kwargs)
    for obs in observers:
        spotter.add_observer(obs)
    return Pipeline(source, spotter, sinks)
