"""fesnet-bench's live runs: the expression lag (live-paced replays per profile) and the cameras
a server keeps up with (senders in processes of their own). Structure and bookkeeping, never
timings: the numbers depend on the machine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_bench import short_clip  # noqa: F401  (the module-scoped clip fixture)

from fesnet.model.merger import MergerConfig
from fesnet.realtime.bench import cli as bench
from fesnet.realtime.bench.lag import ExpressionLag
from fesnet.realtime.bench.profiles import BEFORE_MERGER, PROFILES, hub_settings
from fesnet.realtime.types import Frame, SpotEvent

PCT_KEYS = {"p50_ms", "p95_ms", "p99_ms", "mean_ms", "n"}
BEFORE_JSON = Path(__file__).resolve().parents[1] / "docs/benchmarks/merger-before-issue16.json"


def _expression(state: str, onset: int, offset: int | None) -> SpotEvent:
    return SpotEvent(type="expression", stream="0", t_s=0.0, state=state, onset_frame=onset,
                     offset_frame=offset)


def test_expression_lag_counts_from_the_capture_of_the_frame_the_event_names(monkeypatch) -> None:
    lag = ExpressionLag(last_frame=20)
    for i in range(25):
        lag.on_frame(Frame(np.zeros((2, 2, 3), np.uint8), i, i / 30, 1_000_000_000 + i), None)
    monkeypatch.setattr("time.monotonic_ns", lambda: 1_500_000_000)
    lag(_expression("onset", 3, None))
    lag(_expression("final", 3, 10))
    lag(_expression("cancelled", 12, 13))  # withdrawn onsets are not expressions told
    lag(_expression("final", 15, 22))  # decided by the end-of-stream flush: left out
    lag(SpotEvent(type="status", stream="0", t_s=0.0, onset_frame=5, message="x"))
    assert lag.onset == [pytest.approx(0.5 - 3e-9)]
    assert lag.final == [pytest.approx(0.5 - 10e-9)]


def test_profiles_keep_the_old_settings_reachable() -> None:
    """``before`` is stride 8, the old aligner and the old commit lag whatever the checkpoint
    says now; ``now`` is what the runtime loader gives."""

    from types import SimpleNamespace

    ck = SimpleNamespace(meta={"stride_frames": 2}, merger={"commit_lag_frames": 6}, path=None,
                         config=SimpleNamespace(window_frames=32))
    before, stride = hub_settings(ck, PROFILES["before"])
    assert (stride, before.commit_lag_frames, PROFILES["before"].align) == (8, 12, "before")
    now, stride = hub_settings(ck, PROFILES["now"])
    assert (stride, now.commit_lag_frames, PROFILES["now"].align) == (2, 6, "periodic")
    assert isinstance(now, MergerConfig)
    # The file the docs give to fesnet-spot / fesnet-eval --merger-config for the old settings.
    assert json.loads(BEFORE_JSON.read_text()) == BEFORE_MERGER


@pytest.mark.slow
@pytest.mark.usefixtures("loopback_ice")
def test_bench_lag_and_capacity_report(short_clip, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "live.json"
    args = [
        "--config", "tiny", "--backends", "torch", "--seconds", "0.01", "--streams", "1",
        "--flow", "", "--align", "", "--video", str(short_clip), "--no-plot",
        "--lag-repeats", "1", "--capacity", "1", "--capacity-seconds", "1",
        "--out", str(out),
    ]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    lag = report["expression_lag"]
    assert lag["rounds"] == 1 and set(lag["profiles"]) == {"before", "now"}
    for p in lag["profiles"].values():
        assert p["frames"] + p["dropped"] == 40 and p["final"]["n"] >= 0
        assert p["final"]["n"] == 0 or set(p["final"]) == PCT_KEYS
        assert set(p["frame_score"]) == PCT_KEYS  # windows are scored whatever the model spots
    assert lag["profiles"]["before"]["stride_frames"] == 8
    cap = report["capacity"]
    assert [(r["profile"], r["cameras"]) for r in cap["levels"]] == [("before", 1), ("now", 1)]
    for r in cap["levels"]:
        assert len(r["received_fps"]) == len(r["spotted_share"]) == 1
        assert r["received_fps"][0] > 0 and r["server_cpu_cores"] > 0
        # Nothing queues: what arrived is spotted or dropped at the latest-only slot.
        assert r["peak_in_flight"] <= 5
    assert set(cap["cameras_served"]) == {"before", "now"}


def test_bad_live_arguments() -> None:
    assert bench.main(["--profiles", "yesterday", "--config", "tiny"]) == 2
    assert bench.main(["--capacity", "0", "--config", "tiny"]) == 2
    assert bench.main(["--lag-repeats", "-1", "--config", "tiny"]) == 2
