"""Durations whose cost does not grow with the length of a run.

A live session runs for hours and its viewers ask for latency percentiles every second. Keeping
every sample (or the last 100,000) makes both memory and each percentile query grow with the run
until the history fills (~3.7 h at 60 Hz per stage), after which a stats message costs tens of
milliseconds of event-loop time. A :class:`LogHistogram` counts durations in log-spaced buckets
(fixed size), so whole-run percentiles cost the same at hour 10 as at minute 1 and are exact to
within ``rel_error`` (1 %). :class:`fesnet.realtime.stats.StageStats` keeps one per stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 95, 99)


class LogHistogram:
    """Positive durations (seconds) in log-spaced buckets between ``min_s`` and ``max_s``.

    Bucket ``i`` holds values in ``[min_s * g**i, min_s * g**(i+1))`` with ``g = 1 + 2 *
    rel_error``; a percentile is reported as its bucket's geometric middle, so it is within
    ``rel_error`` of the true sample percentile (values outside the range are clamped into the
    first or last bucket; ``min``/``max``/``mean``/``n`` are exact). Not thread-safe.
    """

    def __init__(self, min_s: float = 1e-7, max_s: float = 1e5, rel_error: float = 0.01) -> None:
        if not (0 < min_s < max_s) or not (0 < rel_error < 0.5):
            raise ValueError("need 0 < min_s < max_s and 0 < rel_error < 0.5")
        self.min_s = min_s
        self._log_g = math.log1p(2 * rel_error)
        self._n_buckets = math.ceil(math.log(max_s / min_s) / self._log_g) + 1
        self._counts = [0] * self._n_buckets
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value_s: float) -> None:
        v = float(value_s)
        if not math.isfinite(v):
            return
        i = 0 if v <= self.min_s else int(math.log(v / self.min_s) / self._log_g)
        self._counts[min(i, self._n_buckets - 1)] += 1
        self.n += 1
        self.total += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)

    def copy(self) -> LogHistogram:
        out = LogHistogram.__new__(LogHistogram)
        out.__dict__.update(self.__dict__)
        out._counts = list(self._counts)
        return out

    def percentiles(self, qs: Sequence[float]) -> list[float]:
        """Percentiles ``qs`` (0-100) in seconds; NaN when empty."""
        if self.n == 0:
            return [math.nan for _ in qs]
        cum = np.cumsum(np.asarray(self._counts, np.int64))
        out = []
        for q in qs:
            rank = min(self.n, max(1, math.ceil(q / 100.0 * self.n)))
            i = int(np.searchsorted(cum, rank))
            mid = self.min_s * math.exp((i + 0.5) * self._log_g)
            out.append(min(max(mid, self.min), self.max))
        return out

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan


def summarize_ms(h: LogHistogram) -> dict[str, float]:
    p50, p95, p99 = h.percentiles(PERCENTILES)
    return {
        "n": h.n,
        "mean_ms": h.mean * 1e3,
        "p50_ms": p50 * 1e3,
        "p95_ms": p95 * 1e3,
        "p99_ms": p99 * 1e3,
        "max_ms": h.max * 1e3,
    }
