"""Scoring the suite through the product's path (model/suite_eval.py, model/methods.py): which
slots count as tracked, one registry of methods, and (slow) a short rendered clip and a real
clip scored end to end with the shipped checkpoint."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fesnet.model.data.preprocess import AlignedVideo
from fesnet.model.runtime import METHODS, RuntimeConfig
from fesnet.model.suite_eval import segments, slice_video, tracked_slots

GENERATOR = ("synthetic", "action_units", "plan", "identities")


def video_with_held_crops() -> AlignedVideo:
    """12 source frames on 24 slots; frames 4-6 held the crop of frame 3 (no face there)."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    crops[4:7] = crops[3]
    source_index = np.repeat(np.arange(12), 2)
    return AlignedVideo("v", "s", crops[source_index], np.zeros(24, np.int64), source_index,
                        30.0, n_missing=3, landmarks=np.zeros((24, 468, 2), np.float32))


def test_slots_of_held_crops_are_not_tracked() -> None:
    v = video_with_held_crops()
    tracked = tracked_slots(v)
    expected = np.ones(12, bool)
    expected[4:7] = False
    np.testing.assert_array_equal(tracked, expected[v.source_index])
    assert segments(tracked, 4) == [(0, 7), (14, 23)]
    assert segments(tracked, 9) == [(14, 23)]
    part = slice_video(v, 14, 23)
    assert len(part) == 10 and part.landmarks.shape == (10, 468, 2)
    np.testing.assert_array_equal(part.source_index, v.source_index[14:24])


def test_every_registered_method_is_loaded_for_an_evaluation() -> None:
    from fesnet.model.evaluate import methods_for

    p = _eval_parser_args(["--backend", "torch", "--suite", "real"])
    assert [m.name for m in methods_for(p)] == list(METHODS)
    assert [m.name for m in methods_for(_eval_parser_args(["--backend", "torch",
                                                          "--method", "landmarks"]))] == [
        "landmarks"]


def _eval_parser_args(argv: list[str]):
    from fesnet.model.evaluate import build_parser

    return build_parser().parse_args(argv)


def test_scoring_loads_no_generator_module() -> None:
    """The scoring path imports the product's preprocessing, which also hosts the synthetic
    set's helpers behind lazy imports; importing and using it never loads the generator."""
    code = (
        "import sys\n"
        "import fesnet.model.suite_eval, fesnet.model.evaluate\n"
        "from fesnet.model.suite_eval import tracked_slots\n"
        f"bad = [m for m in {GENERATOR!r} if 'fesnet.model.data.' + m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


@pytest.mark.slow
def test_a_short_suite_clip_and_a_real_clip_are_scored_end_to_end(tmp_path: Path) -> None:
    """Render an 8 s clip, align it with the product's preprocessing, score every method with
    the shipped checkpoint; then events per minute on a real clip whose face leaves."""
    from fesnet.model.methods import load_methods
    from fesnet.model.suite.clips import render_clip, suite_clips
    from fesnet.model.suite.real import REAL_CLIPS
    from fesnet.model.suite_eval import (
        align_records,
        events_per_minute,
        independent_tables,
        real_tables,
        score_independent,
        suite_groups,
        suite_records,
    )

    spec = dataclasses.replace(suite_clips()[0], duration_s=8.0, name="e2e")
    clip = render_clip(spec, tmp_path / "e2e.mp4")
    assert [lab for _, _, lab in clip.labels].count(1) >= 1
    (video,) = align_records(suite_records([clip]), tmp_path / "aligned", "align")
    assert video.n_missing == 0 and len(video) == 480  # 8 s on the 60 Hz timeline
    assert video.labels.max() >= 1
    methods = load_methods(RuntimeConfig(backend="torch", threads=1))
    scores = score_independent(methods, [video], suite_groups([clip]))
    assert list(scores) == list(METHODS)
    for s in scores.values():
        c = s["groups"]["all"].counts
        assert c["ME"].tp + c["ME"].fn == sum(1 for *_, lab in clip.labels if lab == 1)
        assert c["MaE"].tp + c["MaE"].fn == sum(1 for *_, lab in clip.labels if lab == 2)
    assert "| indep" in independent_tables(scores)

    real = [c for c in REAL_CLIPS if c.name == "face_noface"]
    videos = align_records([_record(real[0])], tmp_path / "aligned", "align real")
    rows = events_per_minute(methods, videos, tuple(real))
    total_s = len(videos[0]) / 60.0
    for r in rows:
        assert 0.5 < r["tracked_s"] < total_s - 1.0  # the cartoon part has no face
    assert "face_noface" in real_tables(rows)


def _record(clip):
    from fesnet.model.data.common import VideoRecord
    from fesnet.model.suite_eval import _fps

    return VideoRecord(f"real-{clip.name}", clip.name, _fps(clip.path), clip.path, [])


def test_a_clip_without_any_face_counts_every_label_as_missed() -> None:
    from toy_videos import toy_video, with_landmarks

    from fesnet.model.methods import Method
    from fesnet.model.peer import LandmarkPeer, PeerConfig
    from fesnet.model.suite_eval import score_independent

    base = np.random.default_rng(1).uniform(20, 90, (468, 2))
    seen = with_landmarks(toy_video(0, n=400), base, 0)
    cfg = PeerConfig(k=3.0)
    method = Method("landmarks", LandmarkPeer(cfg), cfg.merger_config(), 8)
    labels = np.zeros(300, np.int64)
    labels[50:70], labels[100:200] = 1, 2
    scores = score_independent([method], [seen, None], {"all": [0, 1], "faceless": [1]},
                               faceless={1: ("gone", labels)})
    s = scores["landmarks"]
    lost = s["groups"]["faceless"].counts
    assert (lost["ME"].tp, lost["ME"].fp, lost["ME"].fn) == (0, 0, 1)
    assert (lost["MaE"].tp, lost["MaE"].fp, lost["MaE"].fn) == (0, 0, 1)
    assert list(s["videos"]) == ["toy0", "gone"]
    total = s["groups"]["all"].counts["overall"]
    assert total.fn == s["videos"]["toy0"].counts["overall"].fn + 2


def test_every_table_groups_the_suite_by_stratum_talking_fps_and_size() -> None:
    """The groups of the v2 suite's 20 clips: each stratum, talking and calm, the clear clips
    that talk (all subtle clips talk and all calm ones are clear, so "subtle, talking" and
    "clear, calm" would repeat "subtle" and "calm"), each FPS and frame size; every method's
    table has a row for each, and a group's counts are the sums over its clips."""
    from toy_videos import toy_video, with_landmarks

    from fesnet.model.methods import Method
    from fesnet.model.peer import LandmarkPeer, PeerConfig
    from fesnet.model.suite.clips import RenderedClip, suite_clips
    from fesnet.model.suite_eval import independent_tables, score_independent, suite_groups

    specs = suite_clips()
    clips = [RenderedClip(s, Path(f"{s.name}.mp4"), [], 10) for s in specs]
    groups = suite_groups(clips)
    assert list(groups) == ["all", "subtle", "clear", "talking", "calm", "clear, talking",
                            "30 FPS", "60 FPS", "480p", "720p"]
    names = {g: {specs[i].name for i in idx} for g, idx in groups.items()}
    assert len(names["subtle"]) == 12 and len(names["clear"]) == 8
    assert names["calm"] == {s.name for s in specs if not s.talking} and len(names["calm"]) == 4
    assert names["calm"] | names["clear, talking"] == names["clear"]
    assert names["talking"] == names["subtle"] | names["clear, talking"]
    assert all(s.fps == 30 for s in specs if s.name in names["30 FPS"])
    assert names["480p"] | names["720p"] == names["all"]

    base = np.random.default_rng(1).uniform(20, 90, (468, 2))
    videos = [with_landmarks(toy_video(i, n=300), base, i) for i in range(4)]
    cfg = PeerConfig(k=3.0)
    method = Method("landmarks", LandmarkPeer(cfg), cfg.merger_config(), 8)
    four = [clips[0], clips[1], clips[13], clips[15]]  # subtle x2, clear talking, clear calm
    four_groups = suite_groups(four)
    assert [four[i].spec.stratum for i in four_groups["clear"]] == ["clear", "clear"]
    scores = score_independent([method], videos, four_groups)["landmarks"]
    for cls in ("ME", "MaE"):
        per_video = [scores["videos"][v.video_id].counts[cls] for v in videos]
        for g, idx in four_groups.items():
            c = scores["groups"][g].counts[cls]
            assert (c.tp, c.fp, c.fn) == tuple(sum(getattr(per_video[i], k) for i in idx)
                                               for k in ("tp", "fp", "fn"))
    table = independent_tables({"landmarks": scores})
    for g in four_groups:
        assert f"| landmarks | {g} (" in table
