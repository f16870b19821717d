"""The neutral-baseline phase on the real Spotter/Pipeline (stand-in backend and aligner)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from calibration_helpers import FrameIsCropAligner, LevelBackend, make_clip, write_video
from spot_helpers import make_pipeline, make_spotter

from fesnet.calibration.baseline import (
    BaselineConfig,
    CalibrationError,
    CalibrationPhase,
    attach_calibration,
    calibration_phase,
)
from fesnet.calibration.profile import load_profile, save_profile
from fesnet.model.merger import MergerConfig
from fesnet.model.metrics import match_intervals, spotting_f1
from fesnet.realtime.sinks import JsonlSink, ListSink, read_events
from fesnet.realtime.sources import FileSource
from fesnet.realtime.spotter import Spotter
from fesnet.realtime.types import Frame

BASE = MergerConfig(on_threshold=0.5, off_threshold=0.3)
FPS = 30.0


def frames_of(crops_rgb: np.ndarray, start_index: int = 0) -> list[Frame]:
    return [
        Frame(np.ascontiguousarray(c[:, :, ::-1]), start_index + i, (start_index + i) / FPS, 0)
        for i, c in enumerate(crops_rgb)
    ]


def dark(n: int) -> np.ndarray:
    return np.zeros((n, 112, 112, 3), np.uint8)


def run(spotter: Spotter, frames: list[Frame]) -> list:
    events = []
    for f in frames:
        events += spotter.process(f)
    return events + spotter.finish()


def plain() -> Spotter:
    return make_spotter(LevelBackend(), BASE, 8, aligner=FrameIsCropAligner())


def calibrating(**kw) -> tuple[Spotter, CalibrationPhase]:
    spotter = plain()
    return spotter, attach_calibration(spotter, **kw)


def truth_and_frames(seed: int = 1) -> tuple[list[tuple[int, int, int]], list[Frame]]:
    """A person resting at p_expr 0.45 +- 0.08 (above the base on-threshold now and then), with
    1.5 s of neutral face first and then two MaE and one ME (source frames at 30 FPS)."""
    events = [(100, 140, 2), (200, 210, 1), (260, 300, 2)]
    clip = make_clip(330, events, rest=0.45, rest_noise=0.08, seed=seed)
    return events, frames_of(clip.crops)


def final_intervals(events: list) -> list[tuple[int, int, int]]:
    return [
        (e.onset_frame, e.offset_frame, 1 if e.label == "ME" else 2)
        for e in events
        if e.type == "expression" and e.state == "final"
    ]


def test_calibration_raises_thresholds_and_removes_false_positives(tmp_path: Path) -> None:
    truth, frames = truth_and_frames()
    before = spotting_f1([match_intervals(final_intervals(run(plain(), frames)), truth)])
    assert before["overall"].fp > 0  # the resting face crosses the base threshold

    saved = []
    spotter, phase = calibrating(baseline=BaselineConfig(duration_s=1.0), profile_name="alice",
                                 on_profile=lambda p: saved.append(save_profile(p, tmp_path)))
    events = run(spotter, frames)
    status = [e for e in events if e.type == "status"]
    assert [e.state for e in status] == ["calibrating", "calibrated"]
    done = status[1].to_dict()
    assert done["profile"] == "alice" and done["on_threshold"] > 0.55
    assert done["rest_slots"] >= 60
    # Nothing was reported while the person rested; the frames after it are spotted.
    assert all(e.onset_frame > status[1].onset_frame for e in events if e.type == "expression")
    after = spotting_f1([match_intervals(final_intervals(events), truth)])
    assert after["overall"].fp == 0 and after["overall"].tp == 3
    state = phase.state()
    assert state["phase"] == "calibrated" and state["progress"] == 1.0 and not phase.running
    assert state["on_threshold"] == spotter.merger_config.on_threshold
    # The saved profile gives the same thresholds when reused (fesnet-spot run --profile alice).
    assert saved == [tmp_path / "alice.json"]
    reused = load_profile("alice", tmp_path).apply(BASE)
    assert reused == spotter.merger_config


def test_no_face_waits_then_fails_clearly_and_never_calibrates_on_nothing() -> None:
    saved = []
    spotter, phase = calibrating(baseline=BaselineConfig(duration_s=1.0, timeout_s=2.0),
                                 on_profile=saved.append)
    events = []
    frames = frames_of(dark(62))  # frame 60 is 2.0 s after the first one
    for f in frames[:-1]:
        events += spotter.process(f)
    # (a "camera frozen" status, which has no state, also comes: the frames are identical)
    states = [e.state for e in events if e.type == "status" and e.state is not None]
    assert states == ["calibrating", "calibration_failed"]
    failed = next(e for e in events if e.state == "calibration_failed")
    assert "0.0 s of face" in failed.message and "nothing was calibrated" in failed.message
    assert phase.phase == "failed" and phase.profile is None and not saved
    with pytest.raises(CalibrationError, match="nothing was calibrated"):
        spotter.process(frames[-1])


def test_a_face_that_arrives_late_is_waited_for() -> None:
    face = make_clip(60, [], rest=0.2, rest_noise=0.05, seed=3).crops
    spotter, _ = calibrating(baseline=BaselineConfig(duration_s=0.5, timeout_s=5.0))
    events = []
    for f in frames_of(np.concatenate([dark(45), face])):
        events += spotter.process(f)
    assert [e.state for e in events if e.type == "status"] == ["calibrating", "calibrated"]
    assert [e.type for e in events if e.type.startswith("face")] == ["face_found"]
    assert spotter.merger_config == BASE  # a quiet resting face keeps the base thresholds


def test_stream_ending_during_calibration_is_an_error() -> None:
    spotter, _ = calibrating(baseline=BaselineConfig(duration_s=3.0))
    face = make_clip(30, [], rest=0.2, rest_noise=0.05, seed=4).crops
    with pytest.raises(CalibrationError, match="ended during calibration"):
        run(spotter, frames_of(face))


def test_skip_keeps_the_base_thresholds() -> None:
    _, frames = truth_and_frames()
    spotter, phase = calibrating(baseline=BaselineConfig(duration_s=1.0))
    events = spotter.process(frames[0])
    phase.skip()
    events += run(spotter, frames[1:])
    assert [e.state for e in events if e.type == "status"] == ["calibrating",
                                                              "calibration_skipped"]
    assert spotter.merger_config == BASE and phase.profile is None
    assert any(e.type == "expression" for e in events)


def test_pipeline_with_a_calibration_phase_writes_status_events(tmp_path: Path) -> None:
    truth, frames = truth_and_frames(seed=2)
    video = write_video(tmp_path / "clip.mp4", np.stack([f.image[:, :, ::-1] for f in frames]),
                        fps=FPS)
    sink, jsonl = ListSink(), JsonlSink(tmp_path / "events.jsonl")
    profiles: list = []
    pipe = make_pipeline(FileSource(video), LevelBackend(), BASE, 8, [sink, jsonl],
                         aligner=FrameIsCropAligner(),
                         phase=calibration_phase(BaselineConfig(duration_s=1.0), "bob",
                                                 profiles.append))
    phase = pipe.phase
    pipe.run()
    jsonl.close()
    assert isinstance(phase, CalibrationPhase)
    assert phase.phase == "calibrated" and len(profiles) == 1
    lines = [d for d in read_events(tmp_path / "events.jsonl") if d["type"] == "status"]
    assert [d["state"] for d in lines] == ["calibrating", "calibrated"]
    assert lines[1]["profile"] == "bob" and "on_threshold" in lines[1]
    counts = spotting_f1([match_intervals(final_intervals(sink.events), truth)])
    assert counts["overall"].fp == 0 and counts["overall"].tp == 3


@pytest.mark.slow
def test_spot_cli_calibration_without_a_face_exits_with_a_message(tmp_path: Path, capsys) -> None:
    from test_calibration_profile import _tiny_checkpoint

    from fesnet.realtime import cli

    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    video = write_video(tmp_path / "dark.mp4", dark(45), fps=FPS)
    code = cli.main(["run", "--source", str(video), "--checkpoint", str(ckpt), "--backend",
                     "torch", "--calibrate", "--profile", "carol", "--profiles-dir",
                     str(tmp_path / "profiles"), "--quiet"])
    assert code == 2
    assert "ended during calibration after 0.0 s of face" in capsys.readouterr().err
    assert not (tmp_path / "profiles" / "carol.json").exists()


def test_neutral_experiment_pools_sessions_and_reports_each_rule() -> None:
    from fesnet.calibration.experiment import Session, run_neutral_experiment

    events = [(100, 180, 2), (300, 320, 1), (450, 560, 2)]
    sessions = [
        Session("noisy", {}, make_clip(200, [], 0.45, 0.08, seed=5),
                make_clip(640, events, 0.45, 0.08, seed=6)),
        Session("quiet", {}, make_clip(200, [], 0.1, 0.05, seed=7),
                make_clip(640, events, 0.1, 0.05, seed=8)),
    ]
    result = run_neutral_experiment(LevelBackend(), sessions, BASE, stride_frames=8)
    none, calibrated = result.tables["none"], result.tables["q99+0.05"]
    assert none.n_videos == calibrated.n_videos == 2
    assert calibrated.f1_overall > none.f1_overall
    assert result.per_session[1]["q99+0.05"]["on_threshold"] == BASE.on_threshold
    assert "| q99+0.05 |" in result.to_markdown()


def test_neutral_clip_keeps_the_look_and_the_rate_of_head_moves() -> None:
    """The calibration clip of a synthetic session: its look, no expressions, and sudden head
    moves / light changes at the session's rate (a 3 s clip once got the 30 s clip's 2 moves)."""
    from fesnet.calibration.experiment import neutral_clip_spec
    from fesnet.model.data.synthetic import SyntheticSpec

    look = {"rest_aus": (("AU4_brow_lower", 3.0),), "light_gain": 0.7, "light_side": 0.2}
    session = SyntheticSpec(duration_s=30.0, n_head_moves=2, n_light_changes=1, **look)
    short = neutral_clip_spec(session, 3.0)
    assert (short.duration_s, short.n_me, short.n_mae) == (3.0, 0, 0)
    assert (short.n_head_moves, short.n_light_changes) == (0, 0)
    assert (short.rest_aus, short.light_gain, short.light_side) == (
        session.rest_aus, session.light_gain, session.light_side
    )
    assert short.blink_rate_hz == session.blink_rate_hz
    long = neutral_clip_spec(SyntheticSpec(duration_s=30.0, n_head_moves=4), 15.0)
    assert long.n_head_moves == 2


class LateClock:
    """A live stream far behind: every frame is consumed ``late_s`` after its capture."""

    def __init__(self, late_s: float) -> None:
        self.late_ns = int(late_s * 1e9)
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


def run_late(spotter: Spotter, clock: LateClock, frames: list[Frame]) -> list:
    events = []
    for f in frames:
        clock.now_ns = f.t_capture_ns + clock.late_ns
        events += spotter.process(f)
    return events


def test_a_calibrated_live_session_sheds_stale_windows_like_an_uncalibrated_one() -> None:
    """The shed rule belongs to the spotter; a calibration phase composes with it and cannot
    switch it off (it once did: the phase rebuilt the spotter without ``shed_after_s``). Live
    frames 0.25 s apart make 15 slots, so two windows ready at once; consumed 1 s after capture,
    the older one is stale and skipped, during the phase and after it."""
    crops = make_clip(120, [], rest=0.2, rest_noise=0.05, seed=9).crops
    frames = [
        Frame(np.ascontiguousarray(c[:, :, ::-1]), i, i * 0.25, i * 250_000_000, live=True)
        for i, c in enumerate(crops)
    ]
    counts = {}
    for calibrated in (False, True):
        clock = LateClock(1.0)
        spotter = make_spotter(LevelBackend(), BASE, 8, aligner=FrameIsCropAligner(), clock=clock)
        phase = attach_calibration(spotter, BaselineConfig(duration_s=1.0)) if calibrated else None
        half = len(frames) // 2
        run_late(spotter, clock, frames[:half])
        if phase is not None:
            assert phase.phase == "calibrated"  # the phase ended inside the first half ...
        before = spotter.summary()["windows_skipped"]
        run_late(spotter, clock, frames[half:])
        assert spotter.summary()["windows_skipped"] > before  # ... and shedding went on after it
        counts[calibrated] = spotter.summary()
    assert counts[True]["windows_skipped"] > 0 and counts[False]["windows_skipped"] > 0
    # Not behind: the same live frames consumed at once are all scored.
    clock = LateClock(0.0)
    spotter = make_spotter(LevelBackend(), BASE, 8, aligner=FrameIsCropAligner(), clock=clock)
    attach_calibration(spotter, BaselineConfig(duration_s=1.0))
    run_late(spotter, clock, frames)
    assert spotter.summary()["windows_skipped"] == 0


def test_state_reads_no_record_the_infer_thread_is_writing() -> None:
    """A viewer thread polls ``state()`` while the infer thread records windows. Here the infer
    thread records a new segment's window exactly while the viewer's call would be reading the
    recorder's per-segment records (the worst interleaving, made deterministic): ``state()``
    must not read them at all, only what the infer thread handed over under the phase's lock."""
    _, frames = truth_and_frames()
    spotter, phase = calibrating(baseline=BaselineConfig(duration_s=3.0))
    for f in frames[:60]:
        spotter.process(f)
    before = phase.state()
    assert 0.0 < before["progress"] < 1.0
    recorder = phase.recorder

    class RecordedMeanwhile(dict):
        def values(self):  # the viewer's read, with the infer thread's write in the middle
            for i, v in enumerate(dict.values(self)):
                if i == 0:
                    recorder.on_window(spotter_segment + 1, 0, np.zeros((32, 3), np.float32))
                yield v

    spotter_segment = max(recorder._covered)
    recorder._covered = RecordedMeanwhile(recorder._covered)
    assert phase.state() == before
