"""Threshold fitting: the fitted merger config reproduces its reported F1 when the real spotter
(Spotter fed crops, and the threaded Pipeline reading a video file) loads it on the same clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from calibration_helpers import FrameIsCropAligner, LevelBackend, make_clip, write_video
from spot_helpers import make_pipeline, make_spotter

from fesnet.calibration.fit import (
    SearchSpace,
    evaluate_config,
    fit_merger,
    neutral_reference,
    pareto_front,
    score_videos,
    tradeoff_png,
)
from fesnet.model.merger import MergerConfig
from fesnet.model.metrics import MetricTable, evaluate_videos
from fesnet.realtime.sinks import ListSink
from fesnet.realtime.sources import FileSource
from fesnet.realtime.types import Frame

FPS = 60.0


def clips() -> list:
    """Three 60 Hz clips: resting noise, MEs (<= 0.5 s) and MaEs, with weak and strong peaks."""
    return [
        make_clip(700, [(60, 80, 1), (200, 290, 2), (400, 420, 1), (520, 640, 2)],
                  rest=0.25, rest_noise=0.2, seed=11, peak=0.8),
        make_clip(600, [(50, 75, 1), (180, 260, 2), (380, 400, 1)],
                  rest=0.2, rest_noise=0.25, seed=12, peak=0.7),
        make_clip(500, [(100, 190, 2), (300, 322, 1)], rest=0.3, rest_noise=0.15, seed=13),
    ]


def final_intervals(events: list) -> list[tuple[int, int, int]]:
    return sorted(
        (e.onset_frame, e.offset_frame, 1 if e.label == "ME" else 2)
        for e in events
        if e.type == "expression" and e.state == "final"
    )


def spotter_table(backend, cfg: MergerConfig, videos: list) -> MetricTable:
    rows = []
    for v in videos:
        spotter = make_spotter(backend, cfg, 8)
        events = []
        for i, crop in enumerate(v.crops):
            events += spotter.push_crop(Frame(crop[:, :, ::-1], i, i / FPS, 0), crop)
        events += spotter.finish()
        rows.append((final_intervals(events), v.intervals_true, len(v.crops)))
    return evaluate_videos(rows)


@pytest.fixture(scope="module")
def fitted() -> tuple[list, object]:
    videos = clips()
    for v in videos:
        from fesnet.model.metrics import labels_to_intervals

        v.intervals_true = labels_to_intervals(v.labels)
    scored = score_videos(LevelBackend(), videos, 32, 8)
    # A base whose on-threshold sits inside the resting noise: the fit has work to do.
    base = MergerConfig(on_threshold=0.35, off_threshold=0.2)
    result = fit_merger(scored, base, SearchSpace.small(), "overall")
    return videos, scored, result


def test_fit_improves_on_the_base_and_records_every_trial(fitted) -> None:
    _, scored, result = fitted
    assert result.table.f1_overall > result.base_table.f1_overall
    assert result.table.f1_overall == pytest.approx(evaluate_config(scored, result.best).f1_overall)
    assert max(t.score for t in result.trials) == pytest.approx(result.table.f1_overall)
    assert len({json.dumps(t.settings, sort_keys=True) for t in result.trials}) == len(
        result.trials
    )
    json.dumps(result.to_dict())  # the report is plain JSON


def found_both_classes(counts) -> bool:
    """True positives of both labels: the counts compared below are not empty ones."""
    return counts["ME"].tp > 0 and counts["MaE"].tp > 0


def test_fitted_config_reproduces_its_f1_in_the_spotter(fitted, tmp_path: Path) -> None:
    videos, _, result = fitted
    # The fit found expressions of both kinds: reproducing it is not reproducing nothing.
    assert found_both_classes(result.table.counts)
    path = result.best.to_json(tmp_path / "merger.json")
    loaded = MergerConfig.from_json(path)
    assert loaded == result.best
    table = spotter_table(LevelBackend(), loaded, videos)
    assert table.counts == result.table.counts
    assert table.f1 == pytest.approx(result.table.f1)


def test_fitted_config_reproduces_its_f1_in_the_threaded_pipeline(fitted, tmp_path: Path) -> None:
    videos, _, result = fitted
    rows = []
    for k, v in enumerate(videos):
        clip = write_video(tmp_path / f"clip{k}.mp4", v.crops, fps=FPS)
        sink = ListSink()
        pipe = make_pipeline(FileSource(clip), LevelBackend(), result.best, 8, [sink],
                             aligner=FrameIsCropAligner())
        pipe.run()
        rows.append((final_intervals(sink.events), v.intervals_true, len(v.crops)))
    assert all(r[0] for r in rows)  # every clip yields final intervals
    table = evaluate_videos(rows)
    assert found_both_classes(table.counts)
    assert table.counts == result.table.counts


def test_other_metrics_and_the_tradeoff_plot(fitted, tmp_path: Path) -> None:
    _, scored, result = fitted
    me = fit_merger(scored, MergerConfig(), SearchSpace.small(), "ME", max_rounds=1)
    assert me.table.f1["ME"] >= result.base_table.f1["ME"]
    png = tradeoff_png(result, tmp_path / "tradeoff.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="unknown metric"):
        fit_merger(scored, MergerConfig(), SearchSpace.small(), "precision")


def test_neutral_reference_is_the_median_rest_level_of_calm_pieces() -> None:
    """Hand-made windows: p_expr 0.3 everywhere except a labelled expression (p 0.9) and the
    window length around it. 3 s pieces of the calm slots all rest at 0.3; an expression-only
    clip has no calm piece."""
    from fesnet.calibration.fit import ScoredVideo

    n, t = 1200, 32
    starts = list(range(0, n - t + 1, 8))
    p = np.full(n, 0.3)
    p[500:560] = 0.9
    probs = np.stack([np.stack([1 - p[s : s + t], p[s : s + t] / 2, p[s : s + t] / 2], 1)
                      for s in starts]).astype(np.float32)
    video = ScoredVideo("v", starts, probs, n, [(500, 559, 2)])
    ref = neutral_reference([video], MergerConfig(), duration_s=3.0)
    assert ref is not None
    assert ref["p_expr"] == pytest.approx({"0.5": 0.3, "0.9": 0.3, "0.99": 0.3}, abs=1e-5)
    # calm: [0, 468) and [592, 1200) -> 2 + 3 pieces of 180 slots
    assert ref["pieces"] == 5
    busy = ScoredVideo("b", starts, probs, n, [(0, 1199, 2)])
    assert neutral_reference([busy], MergerConfig()) is None


def test_pareto_front() -> None:
    pts = np.array([[10, 50], [20, 40], [15, 30], [30, 10], [5, 50]], float)
    assert pareto_front(pts).tolist() == [0, 1, 3]


def test_tiny_real_checkpoint_fit_reproduces_in_the_spotter(tmp_path: Path) -> None:
    """The same check through the real model path: checkpoint on disk -> TorchBackend."""
    from test_calibration_profile import _tiny_checkpoint

    from fesnet.model import checkpoint
    from fesnet.model.backends import make_backend

    ckpt = checkpoint.load(_tiny_checkpoint(tmp_path / "tiny.pt"))
    backend = make_backend("torch", ckpt)
    rng = np.random.default_rng(0)
    videos = clips()[:2]
    for v in videos:
        from fesnet.model.metrics import labels_to_intervals

        v.crops = v.crops[:160].copy()
        v.labels = v.labels[:160]
        busy = v.labels != 0
        v.crops[busy] = rng.integers(0, 255, (int(busy.sum()), 112, 112, 3), dtype=np.uint8)
        v.intervals_true = labels_to_intervals(v.labels)
    scored = score_videos(backend, videos, 32, 8)
    space = SearchSpace(on_threshold=(0.3, 0.5, 0.7), off_ratio=(1.0,), min_expression_frames=(3,),
                        gap_merge_s=(0.1,), duration_rule=((0.5, 0.5),), max_expression_s=(5.0,),
                        fusion=("mean",))
    result = fit_merger(scored, MergerConfig(), space, "overall", max_rounds=1)
    table = spotter_table(backend, MergerConfig.from_json(result.best.to_json(tmp_path / "m.json")),
                          videos)
    assert table.counts == result.table.counts


def test_update_checkpoint_stores_the_stride_the_merger_was_fitted_at(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A merger fitted on windows every 4 slots is only what was measured at stride 4: the
    checkpoint gets both, and the runtime loader then scores windows at that stride."""
    from types import SimpleNamespace

    from test_calibration_profile import _tiny_checkpoint

    from fesnet.calibration import cli
    from fesnet.model import checkpoint
    from fesnet.model.runtime import RuntimeConfig, load_runtime

    path = _tiny_checkpoint(tmp_path / "tiny.pt")
    base = MergerConfig(on_threshold=0.35, off_threshold=0.2, commit_lag_frames=4)

    def runtime(args) -> SimpleNamespace:
        return SimpleNamespace(checkpoint=checkpoint.load(path), merger=base,
                               stride_frames=args.stride, backend=LevelBackend(),
                               window_frames=32)

    monkeypatch.setattr(cli, "_runtime", runtime)
    monkeypatch.setattr(cli, "_videos", lambda args: clips())
    out = tmp_path / "merger.json"
    assert cli.main(["fit", "--quick", "--stride", "4", "--out", str(out),
                     "--update-checkpoint"]) == 0
    meta = checkpoint.read_meta(path)
    assert meta["stride_frames"] == 4 and meta["merger_fit"]["by"].endswith("--stride 4")
    assert meta["merger"] == MergerConfig.from_json(out).to_dict()
    assert meta["merger"]["commit_lag_frames"] == 4  # a latency setting: kept, not searched
    assert load_runtime(RuntimeConfig(path, "torch")).stride_frames == 4
    assert "window stride 4" in capsys.readouterr().out
