"""The independent suite's renderer (model/suite/): it shares no code with the training data path,
a clip is a pure function of its spec, labels are exactly where the expressions move the face,
and its H.264 files are read by the product's own file source."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_imports import graph

from fesnet.model.suite.clips import (
    CLEAR_CELLS,
    ClipRenderer,
    ClipSpec,
    clear_clips,
    clip_timeline,
    render_clip,
    subtle_clips,
    suite_clips,
)
from fesnet.model.suite.motion import CLEAR, MAE, MAE_SECONDS, ME, ME_SECONDS, STRATA, SUBTLE
from fesnet.model.suite.timeline import make_timeline

GENERATOR = {f"fesnet.model.data.{m}" for m in
             ("synthetic", "action_units", "plan", "identities", "landmarks")}


def closure(g: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += g.get(m, ())
    return seen


def test_the_suite_imports_nothing_of_the_training_generator() -> None:
    """Every import of every suite module, also lazy ones, followed to the end (the checker of
    tests/test_imports.py): none reaches the generator, its identities or its landmark groups."""
    g = graph()
    suite = [m for m in g if m.startswith("fesnet.model.suite.") or m == "fesnet.model.suite"]
    assert "fesnet.model.suite.clips" in suite and "fesnet.model.suite.face" in suite
    assert "fesnet.model.suite_eval" not in suite  # scoring runs the product: apart
    assert "fesnet.model.suite.stills" in closure(g, ["fesnet.model.suite.clips"])
    assert closure(g, suite) & GENERATOR == set()


def test_rendering_a_frame_loads_no_generator_module() -> None:
    code = (
        "import sys, dataclasses\n"
        "from fesnet.model.suite.clips import ClipRenderer, suite_clips\n"
        "spec = dataclasses.replace(suite_clips()[0], duration_s=6.0)\n"
        "ClipRenderer(spec).frame(3)\n"
        "print(sorted(m for m in sys.modules if m.startswith('fesnet.model.data')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


FACES = {"astronaut", "f13-anc", "wolfgang", "grace_hopper", "obama", "einstein"}

# Suite v1 as it was rendered and cached: every clip's digest (its cache file name) and the
# sha1 of its timeline's labels, blinks and talking. Adding strata must not move any of them.
V1_DIGESTS = {
    "astronaut-30fps-480p": "8cc519cfe9", "astronaut-60fps-720p": "67e4b0830d",
    "f13-anc-30fps-720p": "256747405f", "f13-anc-60fps-480p": "c546150f6d",
    "wolfgang-30fps-480p": "2064034a68", "wolfgang-60fps-720p": "b707174288",
    "grace_hopper-30fps-720p": "5a0b7555b1", "grace_hopper-60fps-480p": "1a1498e3d6",
    "obama-30fps-480p": "dfae3abb65", "obama-60fps-720p": "60e218f614",
    "einstein-30fps-720p": "4ea324fe32", "einstein-60fps-480p": "ec5834a50e",
}
V1_TIMELINES_SHA1 = "201cb246f093941bf31f4e88b0462bcb2adef147"


def test_the_v1_clips_keep_their_specs_digests_and_timelines() -> None:
    """The 12 subtle clips are suite v1 byte for byte: the same specs (the fields added since
    stay out of the digest at their defaults), the same cache names and the same draws."""
    specs = subtle_clips()
    assert {s.name: s.digest() for s in specs} == V1_DIGESTS
    assert suite_clips()[:12] == specs
    for s in specs:
        assert (s.stratum, s.talking) == ("subtle", True)
        assert set(s.as_dict()) == {"name", "still", "fps", "width", "height", "duration_s",
                                    "seed", "kbps"}
    moved = dataclasses.replace(specs[0], talking=False)
    assert moved.digest() != specs[0].digest() and moved.as_dict()["talking"] is False
    draws = []
    for s in specs:
        tl = clip_timeline(s)
        draws.append([tl.labels(), list(tl.blinks), list(tl.talking),
                      [e.peak_iod for e in tl.expressions]])
    digest = hashlib.sha1(json.dumps(draws).encode()).hexdigest()
    assert digest == V1_TIMELINES_SHA1


def test_the_suite_covers_every_face_rate_and_size() -> None:
    specs = suite_clips()
    assert len(specs) == 20 and len({s.video_id for s in specs}) == 20
    assert {s.still for s in specs} == FACES
    for part in (subtle_clips(), clear_clips()):
        combos = {(s.fps, s.height) for s in part}
        assert combos == {(30, 480), (30, 720), (60, 480), (60, 720)}
    assert all(30 <= s.duration_s <= 40 for s in specs)
    assert suite_clips() == specs  # a pure function of the seed


def test_the_clear_stratum_is_one_clip_per_cell_half_of_them_calm() -> None:
    clear = clear_clips()
    assert len(clear) == len(CLEAR_CELLS) == 8
    assert {s.stratum for s in clear} == {"clear"}
    assert {s.still for s in clear} == FACES
    cells = [(s.fps, s.height, s.talking) for s in clear]
    assert len(set(cells)) == 8  # FPS x size x talking, each once
    assert sum(s.talking for s in clear) == 4
    assert all(s.height == 480 for s in clear if s.still == "einstein")
    assert all((s.width, s.height) in ((640, 480), (1280, 720)) for s in clear)
    assert {s.seed for s in clear}.isdisjoint(s.seed for s in subtle_clips())


@pytest.mark.parametrize("stratum, talking", [(SUBTLE, True), (CLEAR, True), (CLEAR, False)])
def test_labels_are_exactly_the_frames_where_expressions_move(stratum, talking) -> None:
    for seed, fps in ((0, 30), (1, 60), (2, 30)):
        tl = make_timeline(fps, 36 * fps, 640, np.random.default_rng(seed), stratum=stratum,
                           talking=talking)
        labels = tl.labels()
        assert 6 <= len(labels) <= 10
        strengths = tl.strengths()
        for k, e in enumerate(tl.expressions):
            lo, hi = stratum.me_peak_iod if e.label == ME else stratum.mae_peak_iod
            assert lo <= e.peak_iod <= hi
            assert strengths[:, k].max() == pytest.approx(e.peak_iod)
        assert bool(tl.talking) == talking and bool(tl.jaw.any()) == talking
        assert bool(tl.pucker.any()) == talking
        per_frame = np.zeros(tl.n_frames, int)
        for on, off, label in labels:
            assert per_frame[on : off + 1].sum() == 0  # no overlap
            per_frame[on : off + 1] = label
            seconds = (off - on + 1) / fps
            lo, hi = ME_SECONDS if label == ME else MAE_SECONDS
            assert lo - 1 / fps <= seconds <= hi + 1 / fps
            assert (label == ME) == (seconds <= 0.5)
        moving = tl.strengths().sum(axis=1) > 0
        np.testing.assert_array_equal(moving, per_frame > 0)
        me = per_frame == ME
        for a, b in tl.blinks + tl.talking:  # distractors never overlap a micro-expression
            assert not me[a : b + 1].any()
        for a, b in tl.talking:
            assert not (per_frame[a : b + 1] > 0).any()


def short_spec(**changes: object) -> ClipSpec:
    spec = dataclasses.replace(suite_clips()[2], duration_s=6.0, name="short")
    return dataclasses.replace(spec, **changes)


def test_the_rendered_face_moves_only_inside_labels() -> None:
    """The mesh displacement from labelled expressions is zero on every unlabelled frame and not
    zero on every labelled one; blinks and talking move the face outside labels."""
    r = ClipRenderer(short_spec(fps=30))
    labelled = np.zeros(r.spec.n_frames, bool)
    for on, off, _ in r.timeline.labels():
        labelled[on : off + 1] = True
    assert labelled.any() and not labelled.all()
    for i in range(r.spec.n_frames):
        moved = float(np.abs(r.expression_field(i)).max())
        assert (moved > 0) == labelled[i], i
    other = [i for i in range(r.spec.n_frames) if not labelled[i]
             and np.abs(r.field(i)).max() > 0]
    assert other  # distractors are there, labelled neutral


def test_a_clip_is_a_pure_function_of_its_spec_and_the_product_reads_it(tmp_path: Path) -> None:
    from fesnet.realtime.sources import open_source

    spec = short_spec(duration_s=1.5, fps=30, width=640, height=480, kbps=800)
    a, b = ClipRenderer(spec), ClipRenderer(spec)
    for i in (0, 20, 44):
        np.testing.assert_array_equal(a.frame(i), b.frame(i))
    assert not np.array_equal(a.frame(0), ClipRenderer(short_spec(duration_s=1.5, seed=7)).frame(0))
    clip = render_clip(spec, tmp_path / "one.mp4")
    again = render_clip(spec, tmp_path / "two.mp4")
    digest = [hashlib.sha1(p.read_bytes()).hexdigest() for p in (clip.path, again.path)]
    assert digest[0] == digest[1]
    assert clip.path.with_suffix(".json").exists()
    with open_source(str(clip.path)) as src:
        frames = list(src)
    assert len(frames) == spec.n_frames == 45
    np.testing.assert_allclose([f.pts_s for f in frames], np.arange(45) / 30, atol=2e-3)
    assert frames[0].image.shape == (480, 640, 3)
    err = [np.abs(frames[i].image.astype(int) - a.frame(i).astype(int)).mean() for i in (0, 44)]
    assert max(err) < 8.0, err  # H.264 at a webcam bitrate, not another picture


@pytest.mark.parametrize("name", ["astronaut", "einstein"])
def test_a_head_turn_moves_the_face_in_the_frame(name: str) -> None:
    from fesnet.model.suite.face import Pose

    r = ClipRenderer(short_spec(still=name))
    x, y = r.home
    base = Pose(0, 0, 0, r.base_scale, x, y)
    xy0, _ = r.face.project(r.face.rest, base)
    xy1, _ = r.face.project(r.face.rest, dataclasses.replace(base, yaw=5.0))
    nose, left_cheek = 1, 234
    shift = xy1[:468] - xy0[:468]
    assert abs(shift[nose, 0]) > 1.0  # the nose tip, nearest the camera, swings sideways
    assert abs(shift[nose, 0] - shift[left_cheek, 0]) > 0.5  # by depth, not a translation


@pytest.mark.parametrize("spec", [clear_clips()[1], clear_clips()[6], subtle_clips()[0]],
                         ids=lambda s: s.name)
def test_each_expression_moves_the_drawn_face_by_its_stratum(spec: ClipSpec) -> None:
    """At each expression's strongest frame, the farthest mesh vertex moves in the frame by the
    stratum's range (in the frame's inter-ocular distances; a turned head foreshortens it a
    little), which is the peak its label was drawn with."""
    r = ClipRenderer(spec)
    stratum = STRATA[spec.stratum]
    strengths = r.timeline.strengths()
    assert {e.label for e in r.timeline.expressions} == {ME, MAE}
    for k, e in enumerate(r.timeline.expressions):
        i = int(np.argmax(strengths[:, k]))
        assert e.onset <= i <= e.offset
        pose = r.pose(i)
        rest, _ = r.face.project(r.face.rest, pose)
        moved = r.face.rest + r.face.bank.frame.to_pixels(r.expression_field(i))
        xy, _ = r.face.project(moved, pose)
        shift_iod = np.linalg.norm(xy[:468] - rest[:468], axis=1).max() / (
            r.face.iod_px * pose.scale)
        lo, hi = stratum.me_peak_iod if e.label == ME else stratum.mae_peak_iod
        assert 0.95 * lo <= shift_iod <= 1.01 * hi, (e, shift_iod)
        assert shift_iod == pytest.approx(e.peak_iod, rel=0.03)
