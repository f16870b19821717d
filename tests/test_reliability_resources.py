"""Resources that must not grow with time or with what a peer sends (issue 15, items 7 and 8).

Costs are measured in allocated bytes (tracemalloc) and in pixels, never in wall-clock time, so the
tests mean the same on an idle and on a loaded machine.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fesnet.realtime.stats import StageStats
from fesnet.realtime.timing import LogHistogram


def _fill(stats: StageStats, stage: str, values: list[float]) -> None:
    for v in values:
        stats.add(stage, v)


def test_stage_stats_cost_the_same_after_hours_as_after_a_minute() -> None:
    """A 60 Hz stage for ~1 h (216,000 samples, above the old 100,000-sample history): what the
    stats hold, and what a summary or a viewer's "latency now" query allocates, stay bounded (the
    old history held 100,000 floats, ~3.2 MB a stage, and every query copied all of them)."""
    values = np.random.default_rng(0).lognormal(np.log(0.015), 0.6, 216_000)
    as_floats = values.tolist()
    stats = StageStats()

    def queries() -> tuple[dict[str, float], np.ndarray]:
        recent = stats.values_ms("frame_score_latency")
        float(np.median(recent[-200:]))  # what a viewer's stats message computes
        return stats.summary()["frame_score_latency"], recent

    _fill(stats, "warm-up", [0.01, 0.02])
    stats.add("frame_score_latency", 0.01)
    queries()  # first calls allocate numpy's lazy state; measure the steady state
    stats = StageStats()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        _fill(stats, "frame_score_latency", as_floats)
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        summary, recent = queries()
        query_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert held < 400_000, held  # bytes kept for one stage
    assert query_peak < 200_000, query_peak  # bytes allocated by one round of queries
    assert summary["n"] == 216_000
    exact = np.percentile(values * 1e3, [50, 95, 99])
    got = [summary["p50_ms"], summary["p95_ms"], summary["p99_ms"]]
    assert np.allclose(got, exact, rtol=0.02), (got, exact)
    assert summary["max_ms"] == pytest.approx(values.max() * 1e3)
    assert summary["mean_ms"] == pytest.approx(values.mean() * 1e3)
    assert stats.count("frame_score_latency") == 216_000
    assert np.allclose(recent, values[-len(recent) :] * 1e3)


def test_log_histogram_percentiles_are_within_one_percent() -> None:
    rng = np.random.default_rng(1)
    h = LogHistogram()
    values = np.concatenate([rng.uniform(1e-4, 2e-3, 5000), rng.exponential(0.05, 5000), [0.0]])
    for v in values:
        h.add(v)
    h.add(float("nan"))  # ignored
    assert h.n == len(values) and h.min == 0.0 and h.max == values.max()
    qs = (1, 25, 50, 90, 99, 100)
    got = h.percentiles(qs)
    exact = np.percentile(values, qs, method="inverted_cdf")
    assert np.allclose(got, exact, rtol=0.011), (got, exact)
    assert np.isnan(LogHistogram().percentiles([50])[0])


def test_a_benchmark_over_a_clip_can_keep_every_sample() -> None:
    """``keep_recent=None`` (fesnet-bench's end-to-end runs over a finite clip): exact samples
    of the whole run, beyond the 4,096 a live stream keeps."""
    live, bench = StageStats(), StageStats(keep_recent=None)
    for i in range(5000):
        live.add("x", i / 1e4)
        bench.add("x", i / 1e4)
    assert len(live.values_ms("x")) == 4096 and live.count("x") == 5000
    assert len(bench.values_ms("x")) == bench.count("x") == 5000


FIRST_ALIGNER = """
import gc, threading, weakref
from fesnet.realtime.tracking import FaceTracker

class Session:  # what a pipeline's align thread holds through its frames
    pass

refs = []

def align_thread():
    session = Session()
    refs.append(weakref.ref(session))
    tracker = FaceTracker().open()  # the first mediapipe aligner of this process
    tracker.close()

t = threading.Thread(target=align_thread)
t.start()
t.join()
gc.collect()
print("alive" if refs[0]() is not None else "freed")
"""


def test_the_first_session_of_a_process_is_freed() -> None:
    """mediapipe keeps an exception from its own import (sounddevice without PortAudio) whose
    traceback held the importing thread's frames: the first session of every server (pipeline,
    spotter, WebRTC peer) stayed in memory for good. A fresh process, so that this import is
    the first."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FIRST_ALIGNER], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert out.split() == ["freed"], out
