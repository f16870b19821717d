"""The one place a stream's timings live.

:class:`StageStats` keeps bounded histories of per-stage durations (decode, align, encode, window,
merge, emit) and of latencies (``frame_score_latency``: capture of a window's newest frame -> its
scores; ``event_latency``: capture of the triggering frame -> the event reaching the sinks).
:class:`RateMeter` turns event times into a rate (frames per second over the last ones).
Both are thread-safe: the align and infer threads write, viewers read.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable

import numpy as np

STAGES = ("decode", "align", "encode", "window", "merge", "emit")


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

    def median_ms(self, stage: str, last: int | None = None) -> float | None:
        """Median of the newest ``last`` values (all if None); None before the first one."""
        v = self.values_ms(stage)
        if last is not None:
            v = v[-last:]
        return float(np.median(v)) if len(v) else None

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
