"""What the viewers show: the event log reads like a result, the timeline draws the thresholds in
force, camera sessions start with the phase the entry point gives them, and a pushed frame is
converted to an image on the session's own thread (never on the event loop that pushed it)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from calibration_helpers import FrameIsCropAligner, LevelBackend, make_clip, write_video

from fesnet.calibration.baseline import BaselineConfig, session_phase
from fesnet.model.merger import MergerConfig
from fesnet.realtime.observers import ViewState
from fesnet.realtime.push import PushSource
from fesnet.realtime.session import StreamModel
from fesnet.realtime.types import SpotEvent
from fesnet.realtime.viewers import display
from fesnet.realtime.viewers.hub import HubConfig, SpotHub


def expr(state: str, event_id: int, onset: float, offset: float | None = None, **kw) -> SpotEvent:
    e = SpotEvent(type="expression", stream="cam0", t_s=onset, state=state,  # type: ignore[arg-type]
                  label=kw.get("label", "ME"), event_id=event_id, onset_s=onset,
                  onset_frame=int(onset * 30), apex_s=onset, apex_frame=int(onset * 30),
                  score=kw.get("score", 0.8), regions=kw.get("regions"))
    if offset is not None:
        e.offset_s, e.offset_frame, e.apex_s = offset, int(offset * 30), (onset + offset) / 2
    return e


def other(kind: str, t_s: float, message: str) -> SpotEvent:
    return SpotEvent(type=kind, stream="cam0", t_s=t_s, message=message)  # type: ignore[arg-type]


def test_the_event_log_shows_each_expression_once() -> None:
    events = [
        other("face_found", 0.5, "face found"),
        expr("onset", 0, 1.0),
        expr("cancelled", 0, 1.0, 1.05),  # withdrawn: not shown (it stays in the JSONL)
        expr("onset", 1, 2.0, label="MaE"),
        other("status", 2.5, "camera frozen"),
        expr("final", 1, 2.0, 3.1, label="MaE", score=0.91),
        expr("onset", 2, 4.0),  # still open
    ]
    lines = display.event_log(events).splitlines()
    assert len(lines) == 4  # newest first: the open ME, the status, the MaE, the face
    assert "4.00 s  ME?  onset" in lines[0] and "class provisional" in lines[0]
    assert "camera frozen" in lines[1]
    assert "MaE final" in lines[2] and "2.00-3.10 s" in lines[2] and "p=0.91" in lines[2]
    assert "apex 2.55 s" in lines[2] and "face found" in lines[3]
    assert not any("1.00" in line or "cancelled" in line for line in lines)
    # Once the open one closes, its onset line becomes its result, in the same place.
    closed = display.event_log([*events, expr("final", 2, 4.0, 4.3)]).splitlines()
    assert len(closed) == 4 and "ME  final" in closed[0] and "4.00-4.30 s" in closed[0]
    stopped = display.event_log([*events, expr("interrupted", 2, 4.0, 4.2)])
    assert "4.00-4.20 s" in stopped and "interrupted" in stopped


def test_the_viewer_and_the_console_write_the_same_line() -> None:
    """One formatter: a viewer's log line is the console's line without the stream tag."""
    from fesnet.realtime.sinks import format_event

    for e in (expr("onset", 0, 1.0), expr("final", 0, 1.0, 1.4), other("status", 2.0, "hi")):
        assert format_event(e) == f"[cam0] {display.event_log([e])}"


def test_the_event_log_and_the_console_say_which_regions_moved() -> None:
    """With the geometry channel a final event names the regions that moved (shares >= 10 %,
    at most three, largest first); without it the line is as before."""
    from fesnet.realtime.sinks import format_event, regions_text
    from fesnet.realtime.types import SpotEvent

    shares = {"mouth": 0.62, "brows": 0.21, "eyes": 0.1, "nose": 0.05, "cheeks": 0.02}
    line = display.event_log([expr("final", 0, 1.0, 2.0, label="MaE", regions=shares)])
    assert line.endswith("moved: mouth 62%, brows 21%, eyes 10%")
    assert "moved" not in display.event_log([expr("final", 0, 1.0, 2.0)])
    assert regions_text(None) == regions_text({}) == ""
    event = SpotEvent(type="expression", stream="0", t_s=1.0, state="final", label="MaE",
                      onset_s=1.0, apex_s=1.5, offset_s=2.0, onset_frame=60, apex_frame=90,
                      offset_frame=120, score=0.9, latency_ms=80.0, regions=shares)
    assert format_event(event).endswith("moved: mouth 62%, brows 21%, eyes 10%")
    assert event.to_dict()["regions"] == shares


class FakeLive:
    id = "cam0"

    def __init__(self, on: float, off: float, events: list[SpotEvent]) -> None:
        t = np.arange(0, 6, 1 / 60)
        self._view = ViewState("tracking", 1, None, t, np.full_like(t, 0.3), np.full_like(t, 0.2),
                               on, off)
        self._events = events

    def view(self) -> ViewState:
        return self._view

    def events(self) -> list[SpotEvent]:
        return self._events


def test_the_timeline_draws_the_thresholds_in_force_and_shades_intervals() -> None:
    events = [expr("onset", 0, 1.0), expr("final", 0, 1.0, 1.4), expr("onset", 1, 5.0)]
    fig = display.timeline_figure(FakeLive(0.9, 0.75, events))
    ax = fig.axes[0]
    flat = {round(float(line.get_ydata()[0]), 3) for line in ax.lines
            if len(set(np.asarray(line.get_ydata(), float))) == 1 and len(line.get_ydata()) == 2}
    assert flat == {0.9, 0.75}  # the merger's thresholds, not a fixed 0.5
    p_expr = [line for line in ax.lines if line.get_label() == "p(expr)"]
    assert len(p_expr) == 1 and np.allclose(p_expr[0].get_ydata(), 0.5)  # what they apply to
    assert len(ax.patches) == 2  # the final interval and the one still open


def test_a_pushed_frame_is_converted_by_the_reader_and_only_if_read() -> None:
    src = PushSource(stream="cam").start()
    threads: list[str] = []

    def decoder(value: int):
        def decode() -> np.ndarray:
            threads.append(threading.current_thread().name)
            return np.full((4, 4, 3), value, np.uint8)

        return decode

    for i in range(3):  # the latest-only slot keeps the newest: two are replaced unconverted
        assert src.push_undecoded(decoder(i), pts_s=i / 30)
    frame = None

    def read() -> None:
        nonlocal frame
        frame = src.read(timeout=5)

    reader = threading.Thread(target=read, name="align-cam")
    reader.start()
    reader.join(10)
    assert frame is not None and int(frame.image[0, 0, 0]) == 2 and frame.index == 2
    assert threads == ["align-cam"] and src.dropped == 2
    assert frame.live and frame.decode_s is not None and frame.decode_s >= 0
    src.push_undecoded(lambda: np.zeros((1, 5), np.uint8), pts_s=1.0)
    with pytest.raises(ValueError, match="decode"):
        src.read(timeout=5)


def test_camera_sessions_start_with_the_given_phase_and_replays_do_not(tmp_path: Path) -> None:
    base = MergerConfig(on_threshold=0.5, off_threshold=0.3)
    config = HubConfig(camera_phase=session_phase(BaselineConfig(duration_s=0.5)))
    hub = SpotHub(StreamModel.over(LevelBackend(), base, 8), config)
    crops = make_clip(90, [], rest=0.45, rest_noise=0.08, seed=3).crops
    try:
        cam = hub.open_push("cam", aligner=FrameIsCropAligner())
        assert cam.phase is not None and cam.stats()["calibration"]["phase"] == "calibrating"
        assert cam.stats()["on_threshold"] == 0.5  # the thresholds in force, for the timeline
        for i, c in enumerate(crops):
            cam.push(np.ascontiguousarray(c[:, :, ::-1]), i / 30)
            time.sleep(1 / 60)  # a camera's pace (the slot keeps the newest frame only)
        deadline = time.monotonic() + 30
        while cam.phase.running and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = cam.stats()
        assert stats["calibration"]["phase"] == "calibrated", stats
        assert stats["on_threshold"] == stats["calibration"]["on_threshold"] > 0.5
        assert not cam.skip_phase()  # nothing left to skip
        cam.close()
        replay = hub.open_file(write_video(tmp_path / "c.mp4", crops, fps=30.0), pace="fast",
                               aligner=FrameIsCropAligner())
        assert replay.phase is None and replay.stats()["calibration"] is None
        replay.close()
    finally:
        hub.close_all()


class BoxAligner:
    """A frame is its own aligned face, its landmarks spanning a known box of the frame."""

    crop_size = 112

    def align(self, frame_bgr: np.ndarray):
        from fesnet.model.data.align import AlignResult

        crop = np.ascontiguousarray(frame_bgr[:112, :112, ::-1])
        marks = np.zeros((468, 2), np.float32)
        marks[0], marks[1] = (10.0, 20.0), (50.0, 80.0)  # the rest at (10, 20) too: inside
        marks[2:] = (30.0, 40.0)
        return AlignResult(crop, 1, marks, np.eye(2, 3))

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_replay_panel_carries_its_frames_and_the_face_box(tmp_path: Path) -> None:
    """What the Gradio page's video panel shows of a session: a replay's newest frame (sent
    again only when it is new) with the tracked face's box in fractions of the frame; a camera's
    box, never its image (the page shows its own camera)."""
    import base64

    import cv2

    hub = SpotHub(StreamModel.over(LevelBackend(), MergerConfig(), 8))
    crops = make_clip(40, [], rest=0.45, rest_noise=0.08, seed=3).crops
    try:
        replay = hub.open_file(write_video(tmp_path / "c.mp4", crops, fps=30.0), pace="fast",
                               prefix="replay", aligner=BoxAligner())
        deadline = time.monotonic() + 30
        while replay.running and time.monotonic() < deadline:
            time.sleep(0.05)
        view = display.panel(replay)
        assert view["mode"] == "replay" and view["seq"] == 40  # every frame was consumed
        assert view["box"] == pytest.approx((10 / 112, 20 / 112, 50 / 112, 80 / 112))
        from fesnet.realtime.sinks import format_event

        assert view["stats"]["stream"] == replay.id and view["stats"]["running"] is False
        assert view["event"] == format_event(replay.events()[-1], stream=False) != ""
        head, data = view["image"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (112, 112, 3)
        assert "image" not in display.panel(replay, seen=view["seq"])  # nothing new to send
        replay.close()

        cam = hub.open_push("cam", aligner=BoxAligner())
        cam.push(np.ascontiguousarray(crops[0][:, :, ::-1]), 0.0)
        while cam.frame() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        view = display.panel(cam)
        assert view["mode"] == "camera" and "image" not in view
        assert view["box"] == pytest.approx((10 / 112, 20 / 112, 50 / 112, 80 / 112))
        cam.close()
    finally:
        hub.close_all()


def test_a_large_frame_is_sent_scaled_down() -> None:
    import base64

    import cv2

    url = display.frame_data_url(np.zeros((1080, 1920, 3), np.uint8))
    data = base64.b64decode(url.split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (360, display.FRAME_DISPLAY_WIDTH, 3)
