"""The one place a stream's timings live.

:class:`StageStats` keeps per-stage durations (decode, align, encode, window, merge, emit) and
latencies (``frame_score_latency``: capture of a window's newest frame -> its scores;
``event_latency``: capture of the triggering frame -> the event reaching the sinks) at a bounded
cost: a log-bucket histogram (:mod:`.timing`) plus the recent samples.
:class:`RateMeter` turns event times into a rate (frames per second over the last ones).
Both are thread-safe: the align and infer threads write, viewers read.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable

import numpy as np

from .timing import LogHistogram, summarize_ms

STAGES = ("decode", "align", "encode", "geometry", "window", "merge", "emit")


class StageStats:
    """Per-stage durations: a whole-run :class:`~fesnet.realtime.timing.LogHistogram` plus the
    last ``keep_recent`` samples. Memory and every query are bounded whatever the run length
    (stats cost the same at hour 10 as at minute 1). ``keep_recent=None`` keeps
    every sample: only for a run of known length whose exact samples are wanted (a benchmark
    over a clip), never for a live stream. Thread-safe."""

    def __init__(self, keep_recent: int | None = 4096) -> None:
        self._lock = threading.Lock()
        self._hist: dict[str, LogHistogram] = {}
        self._recent: dict[str, collections.deque[float]] = {}
        self.keep_recent = keep_recent

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            h = self._hist.get(stage)
            if h is None:
                h = self._hist[stage] = LogHistogram()
                self._recent[stage] = collections.deque(maxlen=self.keep_recent)
            h.add(seconds)
            self._recent[stage].append(seconds)

    def extend(self, stage: str, seconds: Iterable[float]) -> None:
        for s in list(seconds):
            self.add(stage, s)

    def count(self, stage: str) -> int:
        """Samples recorded for ``stage`` over the whole run."""
        with self._lock:
            h = self._hist.get(stage)
            return 0 if h is None else h.n

    def values_ms(self, stage: str) -> np.ndarray:
        """The most recent samples of ``stage`` (at most ``keep_recent``; all of them if that is
        None), in milliseconds."""
        with self._lock:
            return np.asarray(self._recent.get(stage, ()), np.float64) * 1e3

    def median_ms(self, stage: str, last: int | None = None) -> float | None:
        """Median of the newest ``last`` values (all kept recent ones if None); None before the
        first one."""
        v = self.values_ms(stage)
        if last is not None:
            v = v[-last:]
        return float(np.median(v)) if len(v) else None

    def histogram(self, stage: str) -> LogHistogram | None:
        """A copy of ``stage``'s whole-run histogram (None if the stage was never timed)."""
        with self._lock:
            h = self._hist.get(stage)
            return None if h is None else h.copy()

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {n, mean_ms, p50_ms, p95_ms, p99_ms, max_ms}} over the whole run."""
        with self._lock:
            hists = {name: h.copy() for name, h in self._hist.items() if h.n}
        return {name: summarize_ms(h) for name, h in hists.items()}


class RateMeter:
    """Events per second over the newest ``window`` ticks. Thread-safe. Times are seconds from
    any monotonic clock; a meter that has not ticked for ``idle_s`` reads 0."""

    def __init__(self, window: int = 120, idle_s: float = 2.0) -> None:
        self._times: collections.deque[float] = collections.deque(maxlen=window)
        self._lock = threading.Lock()
        self.idle_s = idle_s
        self.count = 0

    def tick(self, t_s: float) -> None:
        with self._lock:
            self._times.append(t_s)
            self.count += 1

    def rate(self, now_s: float) -> float:
        with self._lock:
            t = list(self._times)
        if len(t) < 2 or now_s - t[-1] > self.idle_s or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])
