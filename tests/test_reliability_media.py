"""Bad media: every kind of broken input has a defined behaviour (an event, a skip, a reconnect or
a clear error) and none of them crashes the spotter or hangs its consumer.

| input                               | behaviour                                                |
|-------------------------------------|----------------------------------------------------------|
| corrupt / truncated / empty file    | SourceError naming the file, or the decodable frames, end |
| resolution changing mid-stream      | tracked on (the crop is always 112x112), no face loss    |
| timestamps jumping forwards         | ``status`` "source gap", segment restarted               |
| timestamps jumping backwards        | ``status`` "source clock went back", segment restarted   |
| small backward jitter / repeated PTS| frame skipped and counted (``frames_out_of_order``)      |
| variable frame rate                 | resampled by timestamp onto 60 Hz slots                  |
| frozen camera (same image repeated) | ``status`` "camera frozen", then "changing again"        |
| camera unplugged and replugged      | ``status`` "reconnecting" / "reconnected"; or SourceLost |
| no face                             | no events, frames counted                                |
| several faces                       | ``status`` "2 faces in view", the same face stays tracked |
| face leaving and returning          | ``face_lost`` / ``face_found``; no interval spans the gap |
| near-black / saturated lighting     | face lost or tracked, never a crash or a non-finite score |
| malformed pushed frames             | ValueError at ``push()``; the stream keeps running       |

The rows about faces seen by the real mediapipe tracker (several faces, resolution changes,
lighting) are tested in test_reliability_faces.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from spot_helpers import make_pipeline, make_spotter

from fesnet.model.backends import TorchBackend
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.merger import MergerConfig
from fesnet.realtime.engine import Engine
from fesnet.realtime.observers import Observer
from fesnet.realtime.pipeline import PipelineError
from fesnet.realtime.push import PushSource
from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.session import StreamRun
from fesnet.realtime.sinks import ListSink
from fesnet.realtime.sources import FileSource, SourceError, SourceLost, _CaptureSource
from fesnet.realtime.spotter import Spotter
from fesnet.realtime.types import Frame, SpotEvent

FACES = Path(__file__).resolve().parents[1] / "model" / "data" / "faces"
SAMPLE = SAMPLE_CLIP
# Thresholds an untrained network always exceeds: every face segment opens an interval.
BUSY = MergerConfig(on_threshold=0.05, off_threshold=0.05, max_expression_s=60.0)


@pytest.fixture(scope="module")
def engine() -> Engine:
    torch.manual_seed(0)
    return Engine(TorchBackend(FESNet(FESNetConfig.tiny()).eval()), 32)


@dataclass(frozen=True)
class FakeResult:
    crop: np.ndarray | None
    n_faces: int
    landmarks: np.ndarray | None = None
    transform: np.ndarray | None = None


class MarkedAligner:
    """Reads the number of faces from pixel (0, 0, 0) of the frame; the crop is a flat image of
    the frame's pixel (0, 0, 1), so crops differ exactly when frames do. No mediapipe: fast."""

    def align(self, frame_bgr: np.ndarray) -> FakeResult:
        n = int(frame_bgr[0, 0, 0])
        if n == 0:
            return FakeResult(None, 0)
        return FakeResult(np.full((112, 112, 3), frame_bgr[0, 0, 1], np.uint8), n)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def marked(n_faces: int, value: int = 100, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    img = np.zeros((*shape, 3), np.uint8)
    img[0, 0, 0], img[0, 0, 1] = n_faces, value
    return img


def frame(image: np.ndarray, index: int, pts_s: float) -> Frame:
    return Frame(image, index, pts_s, time.monotonic_ns(), "s")


def fake_spotter(engine: Engine, cfg: MergerConfig = BUSY, **kw: Any) -> Spotter:
    return make_spotter(engine, cfg, 8, stream="s", aligner=MarkedAligner(), **kw)


def messages(events: list[SpotEvent]) -> list[str]:
    return [e.message or "" for e in events if e.type == "status"]


def assert_paired(events: list[SpotEvent]) -> None:
    """Every onset is closed exactly once, never spanning a face loss or a restart."""
    opened: dict[int, SpotEvent] = {}
    for e in events:
        if e.type != "expression":
            continue
        if e.state == "onset":
            assert e.event_id not in opened
            opened[e.event_id] = e
        else:
            assert opened.pop(e.event_id, None) is not None, e
            assert e.offset_frame is not None and e.offset_frame >= e.onset_frame
    assert not opened, f"onsets never closed: {list(opened)}"


# -- files -----------------------------------------------------------------------------------------
def _good_clip(path: Path, n: int = 40) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 48))
    for i in range(n):
        out.write(np.full((48, 64, 3), (i * 5) % 255, np.uint8))
    out.release()
    return path


def _corruptions(good: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    n = len(good)
    mid = bytearray(good)
    start = n // 3
    mid[start : start + n // 4] = rng.integers(0, 256, n // 4, dtype=np.uint8).tobytes()
    flipped = bytearray(good)
    for i in rng.integers(64, n, 40):
        flipped[i] ^= 0xFF
    return {
        "empty": b"",
        "one_byte": b"\x00",
        "text": b"this is not a video\n" * 50,
        "random_bytes": rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        "header_only": good[:64],
        "truncated_10pct": good[: n // 10],
        "truncated_50pct": good[: n // 2],
        "truncated_90pct": good[: n * 9 // 10],
        "middle_overwritten": bytes(mid),
        "bits_flipped": bytes(flipped),
        "doubled": good + good,
        "png_named_mp4": cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes(),
    }


CORRUPTIONS = list(_corruptions(b"x" * 1000, np.random.default_rng(0)))


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_or_truncated_file_is_a_clear_error_or_a_clean_partial_read(
    kind: str, tmp_path: Path
) -> None:
    good = _good_clip(tmp_path / "good.mp4").read_bytes()
    bad = tmp_path / f"{kind}.mp4"
    bad.write_bytes(_corruptions(good, np.random.default_rng(7))[kind])
    t0 = time.monotonic()
    try:
        src = FileSource(bad).start()
    except SourceError as e:
        assert str(bad) in str(e)
        return
    frames = []
    while (f := src.read(timeout=10)) is not None:
        frames.append(f)
    try:
        src.stop()
    except SourceError as e:
        assert not frames and "no frame could be decoded" in str(e)
    assert time.monotonic() - t0 < 15
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = [f.pts_s for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)


def test_cli_reports_a_corrupt_file_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fesnet.model import checkpoint
    from fesnet.realtime.cli import main

    torch.manual_seed(0)
    ckpt = checkpoint.save(tmp_path / "tiny.pt", FESNet(FESNetConfig.tiny()))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    rc = main(["run", "--source", str(bad), "--checkpoint", str(ckpt), "--backend", "torch"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.mp4" in err and "Traceback" not in err


# -- timestamps ------------------------------------------------------------------------------------
def test_clock_jumping_forwards_restarts_the_timeline(engine: Engine) -> None:
    sp = fake_spotter(engine)
    events: list[SpotEvent] = []
    for i in range(120):
        t = i / 30 + (20.0 if i >= 60 else 0.0)  # the clock leaps 20 s ahead at frame 60
        events += sp.process(frame(marked(1, 100 + i % 3), i, t))
    events += sp.finish()
    assert any("source gap of 20.0" in m for m in messages(events))
    assert sp.segment == 2  # the gap and the end of the stream
    assert_paired(events)
    for e in events:
        if e.type == "expression" and e.state != "onset":
            assert e.offset_frame < 60 or e.onset_frame >= 60  # never across the gap


def test_clock_jumping_backwards_restarts_instead_of_stalling(engine: Engine) -> None:
    sp = fake_spotter(engine)
    events: list[SpotEvent] = []
    for i in range(60):
        events += sp.process(frame(marked(1, 100 + i % 3), i, 100.0 + i / 30))
    slots_before = sp.summary()["slots"]
    for i in range(60, 120):  # the camera clock resets to 0 (a replay restarting, a driver reset)
        events += sp.process(frame(marked(1, 100 + i % 3), i, (i - 60) / 30))
    assert any("source clock went back 101.97 s" in m for m in messages(events))
    assert sp.summary()["slots"] - slots_before >= 100  # the new timeline is spotted, no stall
    events += sp.finish()
    assert_paired(events)


def test_backward_jitter_and_repeated_timestamps_are_skipped_and_counted(engine: Engine) -> None:
    sp = fake_spotter(engine)
    ts = [i / 30 for i in range(40)]
    ts[20] = ts[18]  # reordered
    ts[30] = ts[29]  # repeated PTS
    events = []
    for i, t in enumerate(ts):
        events += sp.process(frame(marked(1, 100 + i % 3), i, t))
    events += sp.finish()
    assert sp.summary()["frames_out_of_order"] == 2
    assert not messages(events)  # no restart for a jitter
    assert sp.segment == 1


def test_variable_frame_rate_is_resampled_by_timestamp(engine: Engine) -> None:
    rng = np.random.default_rng(3)
    dts = rng.uniform(1 / 45, 1 / 20, 150)  # 20..45 FPS, jittering every frame
    ts = np.concatenate([[0.0], np.cumsum(dts)])
    sp = fake_spotter(engine)
    events = []
    for i, t in enumerate(ts):
        events += sp.process(frame(marked(1, 100 + i % 3), i, float(t)))
    events += sp.finish()
    expected_slots = ts[-1] * 60
    assert abs(sp.summary()["slots"] - expected_slots) <= 3
    assert sp.summary()["windows"] >= 5 and not messages(events)


# -- camera states ---------------------------------------------------------------------------------
def test_frozen_camera_is_reported_and_recovers(engine: Engine) -> None:
    sp = fake_spotter(engine)
    stuck = marked(1, 120)
    events = []
    for i in range(240):  # 60 FPS: moving for 1 s, the same buffer for 2.5 s, moving again
        image = stuck if 60 <= i < 210 else marked(1, 100 + i % 3)
        events += sp.process(frame(image, i, i / 60))
    events += sp.finish()
    msgs = messages(events)
    assert [m.split(":")[0] for m in msgs] == ["camera frozen", "camera image changing again"]
    frozen = next(e for e in events if e.message and e.message.startswith("camera frozen"))
    assert 60 + 2 * 60 <= frozen.onset_frame <= 60 + 2 * 60 + 2  # after frozen_after_s = 2 s
    assert sp.summary()["frozen"] == 1


class FakeCapture:
    """An OpenCV-like capture whose reads fail from ``fail_from`` for ``n_fail`` reads."""

    def __init__(self, plan: dict[str, int]) -> None:
        self.plan = plan

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(1 / 60)
        self.plan["reads"] += 1
        n = self.plan["reads"]
        if self.plan["fail_from"] <= n < self.plan["fail_from"] + self.plan["n_fail"]:
            return False, None
        return True, marked(1, 100 + n % 3)

    def release(self) -> None:
        pass


class FlakyCamera(_CaptureSource):
    """A camera that is unplugged after ``fail_from`` reads; opening it fails ``open_fails`` times
    while it is out, then it is back (or never, with ``n_fail`` huge)."""

    def __init__(self, fail_from: int, n_fail: int, open_fails: int, attempts: int = 5) -> None:
        self.plan = {"reads": 0, "fail_from": fail_from, "n_fail": n_fail}
        self.open_fails = open_fails
        self.opens = 0
        super().__init__("cam", None, None, attempts, 0.02)

    def _open(self) -> Any:
        self.opens += 1
        if 1 < self.opens <= 1 + self.open_fails:
            return None
        return FakeCapture(self.plan)

    def _open_error(self) -> str:
        return "camera is not present"


class FrameIndices(Observer):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_frame(self, frame: Frame, tracked: Any) -> None:
        self.seen.append(frame.index)


def _run_fake_pipeline(
    engine: Engine, source: Any, observer: Observer | None = None, timeout: float = 20
) -> tuple[StreamRun, Any]:
    sink = ListSink()
    pipe = make_pipeline(source, engine, BUSY, 8, [sink], aligner=MarkedAligner(),
                         observers=[observer] if observer else [])
    pipe.start()
    deadline = time.monotonic() + timeout
    err = None
    try:
        while not pipe.join(timeout=0.2):
            assert time.monotonic() < deadline, "pipeline hangs"
    except (PipelineError, SourceError, SourceLost) as e:  # join re-raises the source's error
        err = e
    return pipe, (sink, err)


def test_camera_unplugged_and_replugged_reconnects(engine: Engine) -> None:
    cam = FlakyCamera(fail_from=40, n_fail=3, open_fails=1)
    original_run = cam._run

    def run_then_stop() -> None:  # end the endless camera once it is back for a while
        def stopper() -> None:
            while cam.plan["reads"] < 120:
                time.sleep(0.01)
            cam._stop_event.set()

        threading.Thread(target=stopper, daemon=True).start()
        original_run()

    cam._run = run_then_stop  # type: ignore[method-assign]
    indices = FrameIndices()
    pipe, (sink, err) = _run_fake_pipeline(engine, cam, indices)
    seen = indices.seen
    assert err is None
    msgs = [e.message for e in sink.events if e.type == "status"]
    assert "source: read failed; reconnecting (attempt 1)" in msgs
    assert "source: reconnected" in msgs
    assert cam.reconnects >= 1
    assert pipe.summary()["frames_read"] >= 110  # frames flow again after the replug ...
    assert max(seen) > 45  # ... and are spotted
    assert_paired(sink.events)


def test_camera_that_stays_unplugged_ends_with_a_clear_error(engine: Engine) -> None:
    """A failure while running (SourceLost: exit code 1), not bad input (SourceError: 2)."""
    cam = FlakyCamera(fail_from=20, n_fail=10**9, open_fails=10**9, attempts=3)
    pipe, (sink, err) = _run_fake_pipeline(engine, cam)
    assert isinstance(err, SourceLost) and not isinstance(err, SourceError)
    assert "read failed and 3 reconnect attempts did not help" in str(err)
    msgs = [e.message for e in sink.events if e.type == "status"]
    assert sum("reconnecting" in m for m in msgs) == 3
    assert_paired(sink.events)  # the interval open at the unplug was closed
    assert not pipe.running


def test_no_face_gives_no_events_and_counts_frames(engine: Engine) -> None:
    sp = fake_spotter(engine)
    events = []
    for i in range(90):
        events += sp.process(frame(marked(0, i % 50), i, i / 30))  # a live empty scene
    events += sp.finish()
    assert events == []
    assert sp.summary()["frames"] == 90 and sp.summary()["slots"] == 0


def test_face_leaving_and_returning_closes_and_reopens_cleanly(engine: Engine) -> None:
    pattern = [1] * 70 + [0] * 15 + [1] * 70 + [0, 0] + [1] * 40  # a long absence, a blink
    sp = fake_spotter(engine)
    events = []
    for i, n in enumerate(pattern):
        events += sp.process(frame(marked(n, 100 + i % 3), i, i / 30))
    events += sp.finish()
    kinds = [e.type for e in events if e.type != "expression"]
    assert kinds == ["face_found", "face_lost", "face_found"]  # a 2-frame miss is bridged
    lost = next(e for e in events if e.type == "face_lost").onset_frame
    back = [e for e in events if e.type == "face_found"][1].onset_frame
    assert_paired(events)
    finals = [e for e in events if e.type == "expression" and e.state != "onset"]
    assert len(finals) >= 2
    for e in finals:
        assert e.offset_frame < lost or e.onset_frame >= back


def test_malformed_pushed_frames_are_rejected_at_the_producer(engine: Engine) -> None:
    src = PushSource(stream="p")
    sink = ListSink()
    pipe = make_pipeline(src, engine, BUSY, 8, [sink], aligner=MarkedAligner())
    pipe.start()
    assert pipe.wait_ready(10)
    bad = [
        np.zeros((24, 32), np.uint8), np.zeros((24, 32, 4), np.uint8),
        np.zeros((1, 1, 3), np.uint8), np.zeros((24, 32, 3), np.float32),
        np.zeros((0, 32, 3), np.uint8), "not an image", None,
    ]
    for i in range(60):
        if i % 10 == 5:
            with pytest.raises(ValueError):
                src.push(bad[(i // 10) % len(bad)], i / 30)  # type: ignore[arg-type]
        src.push(marked(1, 100 + i % 3), i / 30)
        time.sleep(0.005)
    for b in bad:
        with pytest.raises(ValueError):
            src.push(b, 99.0)  # type: ignore[arg-type]
    src.close()
    assert pipe.join(20)
    assert pipe.summary()["frames"] > 0 and sink.of_type("face_found")


@pytest.mark.slow
def test_real_clip_truncated_mid_stream_spots_what_it_has(engine: Engine, tmp_path: Path) -> None:
    """The shipped real-face clip cut at 40 %: the frames before the cut are spotted, the run
    ends normally (events closed), no error."""
    cut = tmp_path / "cut.mp4"
    cap = cv2.VideoCapture(str(SAMPLE))
    out = cv2.VideoWriter(str(cut), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    for _ in range(90):
        ok, img = cap.read()
        assert ok
        out.write(cv2.resize(img, (320, 240)))
    out.release()
    cap.release()
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.4)])
    try:
        source = FileSource(cut)
    except SourceError as e:  # mp4v puts the index at the end: a cut file may not open at all
        assert "cut.mp4" in str(e)
        return
    sink = ListSink()
    pipe = make_pipeline(source, engine, BUSY, 8, [sink])
    pipe.run()
    assert_paired(sink.events)
