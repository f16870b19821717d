"""Building the streaming spotter in tests, through the one place streams are put together
(realtime/session.py): a Spotter over any backend (or a shared Engine), and a stream that runs
it on a source, with the tracker's aligner given (a stand-in, no mediapipe) or made on the align
thread (mediapipe)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fesnet.model.merger import MergerConfig
from fesnet.realtime.engine import Engine
from fesnet.realtime.observers import Observer
from fesnet.realtime.session import StreamModel, StreamRun, open_spotter, open_stream
from fesnet.realtime.sinks import Sink
from fesnet.realtime.sources import Source
from fesnet.realtime.spotter import Spotter
from fesnet.realtime.tracking import FaceTracker


def stream_model(backend: Any, cfg: MergerConfig | None = None, stride: int = 8) -> StreamModel:
    cfg = cfg or MergerConfig()
    if isinstance(backend, Engine):
        return StreamModel(backend, cfg, stride)
    return StreamModel.over(backend, cfg, stride)


def make_spotter(
    backend: Any,
    cfg: MergerConfig | None = None,
    stride: int = 8,
    *,
    aligner: Any = None,
    **kwargs: Any,
) -> Spotter:
    tracker = FaceTracker(aligner) if aligner is not None else kwargs.pop("tracker", None)
    return open_spotter(stream_model(backend, cfg, stride), tracker=tracker, **kwargs)


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
) -> StreamRun:
    tracker = FaceTracker(aligner) if aligner is not None else kwargs.pop("tracker", None)
    return open_stream(stream_model(backend, cfg, stride), source, sinks, tracker=tracker,
                       observers=observers, **kwargs)
