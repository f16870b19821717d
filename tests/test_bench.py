"""fesnet-bench runs end to end on a short clip and writes a well-formed report (structure, not
timings: the numbers depend on the machine)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from fesnet.realtime.bench import cli as bench
from fesnet.realtime.bench.end_to_end import camera_60fps_ms_per_frame
from fesnet.realtime.bench.timing import face_crops, percentiles_ms
from fesnet.realtime.optical_flow import (
    FLOW_METHODS,
    OpticalFlowBaseline,
    flow_sequence,
    optical_strain,
)
from fesnet.realtime.stats import STAGES

PCT_KEYS = {"p50_ms", "p95_ms", "p99_ms", "mean_ms", "n"}


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """1.3 s at 30 FPS: a shipped real face, gently moving, on a larger frame."""
    import cv2

    crops = face_crops(40, size=240)
    path = tmp_path_factory.mktemp("clip") / "face.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 320))
    assert writer.isOpened()
    for crop in crops:
        frame = np.full((320, 320, 3), 40, np.uint8)
        frame[40:280, 40:280] = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
        writer.write(frame)
    writer.release()
    return path


def test_bench_end_to_end_report(short_clip, tmp_path, capsys, monkeypatch) -> None:
    from fesnet.realtime.stats import StageStats

    # A live stream keeps only its recent samples; that bound made smaller than this clip, so the
    # end-to-end percentiles below must come from every frame of the clip, not the recent ones.
    monkeypatch.setattr(StageStats.__init__, "__defaults__", (8,))
    out = tmp_path / "bench.json"
    args = [
        "--config", "tiny",
        "--backends", "torch",  # ONNX export costs ~10 s here; test_backends covers it
        "--seconds", "0.02",
        "--streams", "1,2",
        "--flow", "farneback,tvl1",
        "--video", str(short_clip),
        "--cache-dir", str(tmp_path / "cache"),
        "--out", str(out),
    ]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert report["schema"] == bench.SCHEMA
    assert report["command"].startswith("fesnet-bench --config tiny")
    assert report["machine"]["cpu_count"] >= 1
    assert report["model"]["window_frames"] == 32 and report["model"]["stride_frames"] == 8

    runs = {r["backend"]: r for r in report["backends"]}
    assert set(runs) == {"torch"}
    for r in runs.values():
        assert set(r["encode_1_frame"]) == PCT_KEYS
        assert set(r["window"]) == {"1", "2"} and set(r["windows_per_s"]) == {"1", "2"}
        for key in ("encoder_frames_per_s", "stream_frames_per_s", "cached_vs_naive"):
            assert r[key] > 0, key
    ratios = {r["backend"]: r for r in report["ratios_vs_torch"]}
    assert ratios["torch"]["encoder"] == ratios["torch"]["stream_per_frame"] == 1.0
    assert {f["method"] for f in report["optical_flow"]} == set(FLOW_METHODS)
    assert len(report["ours_vs_flow"]) == 2
    assert "tensorrt" in report["unavailable"] or "tensorrt" in runs

    e2e = report["end_to_end"]
    assert [r["streams"] for r in e2e] == [1, 2] and {r["backend"] for r in e2e} == {"torch"}
    for r in e2e:
        assert r["frames"] == r["frames_read"] == 40 * r["streams"]  # fast pace: no drops
        assert r["dropped"] == 0
        assert set(r["stages"]) == set(STAGES)
        assert set(r["stages"]["decode"]) == PCT_KEYS
        assert r["stages"]["decode"]["n"] == r["frames"]  # every frame of the clip, exactly
        assert set(r["latency"]) == {"frame_score", "event"}
        assert r["sustained_frames_per_s"] > 0
    assert {r["align"] for r in e2e} == {"periodic"}
    align = report["align"]
    assert align["frames"] == 40 and align["reference"] == "before"
    assert set(align["modes"]) == {"before", "every-frame", "periodic"}
    for a in align["modes"].values():
        assert set(a["per_frame"]) == PCT_KEYS and a["p50_vs_reference"] > 0
        # One face in view: following it alone gives the bytes of looking for two every frame,
        # and the vectorised reading / RGB warp give the bytes of the aligner before them.
        assert a["crops_identical"] == 1.0 and a["crop_max_abs_diff"] == 0
        assert a["n_faces_equal"] == 1.0
    vs = report["pipeline_vs_flow"]
    assert {r["flow"] for r in vs} == set(FLOW_METHODS) and all(r["speedup"] > 0 for r in vs)
    assert "wrote" in capsys.readouterr().out


def test_bench_without_video_skips_end_to_end(tmp_path) -> None:
    out = tmp_path / "b.json"
    args = ["--config", "tiny", "--backends", "torch", "--seconds", "0.01", "--streams", "1"]
    assert bench.main([*args, "--flow", "", "--no-plot", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["end_to_end"] == {"skipped": "no --video given"}
    assert report["align"] == {"skipped": "no --video given"}
    assert report["optical_flow"] == [] and report["ours_vs_flow"] == []
    assert report["pipeline_vs_flow"] == []
    assert not out.with_suffix(".png").exists()


def test_percentiles_and_bad_arguments(capsys) -> None:
    p = percentiles_ms([0.001] * 99 + [0.1])
    assert p["p50_ms"] == pytest.approx(1.0) and p["p99_ms"] > 1.0 and p["n"] == 100
    assert percentiles_ms([]) == {"n": 0}
    assert bench.main(["--stride", "0", "--config", "tiny"]) == 2
    assert bench.main(["--align", "sometimes", "--config", "tiny"]) == 2


def test_optical_flow_baseline_tracks_a_shift() -> None:
    crops = face_crops(3)
    shifted = np.roll(crops[0], 2, axis=1)  # content moves 2 px right
    for method in FLOW_METHODS:
        base = OpticalFlowBaseline(method)
        f = base.features(crops[0], shifted)
        assert f.shape == (112, 112, 3) and f.dtype == np.float32
        u = f[20:-20, 20:-20, 0]
        assert abs(float(np.median(u)) - 2.0) < 0.5, method
    assert flow_sequence(crops, OpticalFlowBaseline("farneback"), k_frames=2).shape[0] == 1
    assert np.allclose(optical_strain(np.ones((8, 8, 2), np.float32)), 0.0)
    with pytest.raises(ValueError, match="unknown flow method"):
        OpticalFlowBaseline("lucas-kanade")


def test_60fps_estimate_is_the_slowest_thread_or_the_work_over_the_cores() -> None:
    """Hand-computed: align 6 ms on its own thread; infer = encode 3 + (window 8 + merge 0) / 8
    + emit 0 = 4 ms; decode 1 ms. Serial sum 11 ms. On 2 cores the bound is max(6, 4, 1, 5.5)."""
    stages = {"decode": {"p50_ms": 1.0}, "align": {"p50_ms": 6.0}, "encode": {"p50_ms": 3.0},
              "window": {"p50_ms": 8.0}, "merge": {"p50_ms": 0.0}}
    assert camera_60fps_ms_per_frame(stages, 8, cores=2) == (6.0, 11.0)
    # One core: the threads cannot overlap, the serial sum is the cost.
    assert camera_60fps_ms_per_frame(stages, 8, cores=1) == (11.0, 11.0)


def test_bench_times_a_geometry_network(tmp_path) -> None:
    """A network with a geometry channel is timed with a geometry input (its window graph
    refuses a call without one), and the geometry stage counts in the per-frame cost."""
    import torch

    from fesnet.model import checkpoint
    from fesnet.model.fesnet import FESNet, FESNetConfig
    from fesnet.model.geometry import GeometryConfig
    from fesnet.model.head import with_geometry
    from fesnet.model.runtime import build_backend
    from fesnet.realtime.bench.backends import backend_calls

    torch.manual_seed(0)
    net = with_geometry(FESNet(FESNetConfig.tiny()))
    meta = {"geometry": GeometryConfig().to_dict()}
    ck = checkpoint.load(checkpoint.save(tmp_path / "geo.pt", net, meta))
    backend = build_backend("onnx", ck, 1, cache_dir=tmp_path / "cache")
    calls = backend_calls(backend, face_crops(32), 32, [1, 2])
    for fn in calls.values():
        fn()
    with pytest.raises(ValueError, match="geom"):
        backend.window(*(x[None] for x in backend.encode(face_crops(32))))
    stages = {k: {"p50_ms": 1.0} for k in ("decode", "align", "encode", "window", "merge", "emit")}
    without, _ = camera_60fps_ms_per_frame(stages, 8, cores=1)
    with_geom, _ = camera_60fps_ms_per_frame({**stages, "geometry": {"p50_ms": 2.0}}, 8, cores=1)
    assert with_geom == pytest.approx(without + 2.0)


def test_bench_times_the_checkpoints_stride_by_default(tmp_path) -> None:
    """Without --stride the bench measures what fesnet-spot runs: the checkpoint's stride."""
    import torch

    from fesnet.model import checkpoint
    from fesnet.model.fesnet import FESNet, FESNetConfig

    torch.manual_seed(0)
    path = checkpoint.save(tmp_path / "tiny.pt", FESNet(FESNetConfig.tiny()))
    checkpoint.update_meta(path, stride_frames=2)
    out = tmp_path / "b.json"
    args = ["--checkpoint", str(path), "--backends", "torch", "--seconds", "0.01", "--streams",
            "1", "--flow", "", "--no-plot", "--out", str(out)]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    assert report["model"]["stride_frames"] == report["settings"]["stride_frames"] == 2
    assert bench.main([*args, "--stride", "8"]) == 0
    assert json.loads(out.read_text())["model"]["stride_frames"] == 8


def test_bench_tier_mode_report(tmp_path, capsys) -> None:
    """``--tier``: the model tier alone (capacity per level, one camera's latency, against
    today's per-stream engine); structure only."""
    out = tmp_path / "t.json"
    args = ["--tier", "--config", "tiny", "--tier-backend", "torch", "--streams", "1,2",
            "--tier-compare", "1,2", "--seconds", "0.2", "--out", str(out)]
    assert bench.main(args) == 0
    t = json.loads(out.read_text())["tier"]
    assert t["tier"] == "torch-cpu-fp32" and t["device"] == "cpu"
    # the sweep stops at the first saturated level (cycle over twice the budget), which a
    # loaded machine can reach at 1 stream: then that is what it must say
    levels = [r["streams"] for r in t["capacity"]["levels"]]
    saturated_at_1 = levels == [1] and t["capacity"]["stopped"] == "saturated at 1 streams"
    assert levels == [1, 2] or saturated_at_1
    assert all(r["mode"] == "pipelined" and r["device_ms"] for r in t["capacity"]["levels"])
    assert set(t["latency"]["window_step_ms"]) == PCT_KEYS
    assert [r["streams"] for r in t["engine_vs_tier"]] == [1, 2]
    assert all(r["tier_vs_engine"] > 0 for r in t["engine_vs_tier"])
    assert t["counts"]["windows"] > 0 and t["counts"]["missing"] == 0
    assert "tier torch-cpu-fp32" in capsys.readouterr().out
    assert not out.with_suffix(".png").exists()


def test_the_capacity_sweep_stops_at_the_first_saturated_level(monkeypatch) -> None:
    """The sweep's stopping rule on made-up cycle times (the timed run above cannot pin it)."""
    from fesnet.realtime.bench import tier as tier_bench

    cycle_ms = {1: 10.0, 2: 50.0, 4: 140.0, 8: 300.0}  # budget at stride 4: 66.7 ms

    def fake_capacity(tier, n, stride, *args, **kwargs):
        budget = stride / 60 * 1e3
        return {"streams": n, "realtime_budget_ms": budget, "cycle_ms": {"p50_ms": cycle_ms[n]},
                "stage_ms": {"p50_ms": 1.0}, "cameras_at_60fps": int(n * budget / cycle_ms[n])}

    monkeypatch.setattr(tier_bench, "capacity", fake_capacity)
    tier = types.SimpleNamespace(max_streams=64, name="fake")
    out = tier_bench.capacity_sweep(tier, [8, 1, 2, 4], 4, None, None, progress=lambda _: None)
    assert [r["streams"] for r in out["levels"]] == [1, 2, 4]
    assert out["stopped"] == "saturated at 4 streams"
    assert out["cameras_at_60fps"] == 2  # level 2 carried 2 (capped by its N), level 4 only 1


def test_the_spotter_only_measure_runs_the_whole_stream_without_model_or_landmarks(
    tmp_path, capsys
) -> None:
    """realtime/bench/spotter_only.py: every frame of its clip through a viewer session, its
    expressions found (so the merger, the events and the sinks did their work), one JSON line a
    repetition."""
    from fesnet.realtime.bench import spotter_only

    out = tmp_path / "so.jsonl"
    assert spotter_only.main(["--reps", "2", "--seconds", "4", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["frames"] == 240  # 4 s at 60 FPS, nothing dropped
        assert row["events"] >= 3  # face found, and an expression's onset and its final
        assert row["us_per_frame"] > 0 and row["cpu_us_per_frame"] > 0
