"""The threaded pipeline: bounded memory under a slow engine, errors that surface, face states
with real mediapipe, stop() closing open intervals, JSONL events."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from spot_helpers import make_pipeline

from fesnet.model.backends import TorchBackend
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.model.merger import MergerConfig
from fesnet.realtime.observers import Observer, ScoreLog
from fesnet.realtime.pipeline import PipelineError
from fesnet.realtime.push import PushSource
from fesnet.realtime.sinks import JsonlSink, ListSink, read_events
from fesnet.realtime.sources import FileSource
from fesnet.realtime.stats import StageStats

FACES = Path(__file__).resolve().parents[1] / "model" / "data" / "faces"


@pytest.fixture(scope="module")
def tiny() -> TorchBackend:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return TorchBackend(FESNet(FESNetConfig.tiny()).eval())


class SlowBackend:
    """A backend whose window head takes ``delay_s`` (a GPU-less laptop under load)."""

    def __init__(self, inner: TorchBackend, delay_s: float) -> None:
        self.inner, self.delay_s, self.name = inner, delay_s, "slow"

    def encode(self, frames_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.encode(frames_u8)

    def window(self, x_prime: np.ndarray, x_atten: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.window(x_prime, x_atten)


class BrokenBackend(SlowBackend):
    def window(self, x_prime: np.ndarray, x_atten: np.ndarray) -> np.ndarray:
        raise RuntimeError("backend exploded")


def face_canvas(i: int, h: int = 240, w: int = 320) -> np.ndarray:
    face = cv2.imread(str(FACES / "wolfgang.jpg"))
    scale = 190 / max(face.shape[:2])
    face = cv2.resize(face, None, fx=scale, fy=scale)
    canvas = np.full((h, w, 3), 90, np.uint8)
    dx, dy = 60 + int(10 * np.sin(i / 9)), 25
    fh, fw = face.shape[:2]
    canvas[dy : dy + fh, dx : dx + fw] = face[: h - dy, : w - dx]
    return canvas


def write_clip(path: Path, pattern: list[bool], fps: float = 30.0) -> Path:
    """True = a face frame, False = an empty frame."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i, has_face in enumerate(pattern):
        out.write(face_canvas(i) if has_face else np.full((240, 320, 3), 90, np.uint8))
    out.release()
    return path


@pytest.mark.slow
def test_slow_engine_keeps_memory_bounded_and_counts_drops(tiny: TorchBackend) -> None:
    src = PushSource(stream="cam")
    sink = ListSink()
    pipe = make_pipeline(src, SlowBackend(tiny, 0.15), MergerConfig(), 8, [sink])
    spotter = pipe._spotter  # white box: the ring and the merger's tail stay bounded
    ring_buffer = spotter.ring.arrays["x_prime"]
    pipe.start()
    assert pipe.wait_ready(timeout=30)
    frames = [face_canvas(i) for i in range(8)]
    n = 180
    t0 = time.monotonic()
    for i in range(n):  # 60 FPS push from this thread, like a WebRTC track handler
        src.push(frames[i % 8], pts_s=i / 60)
        assert len(src.channel) <= 1
        time.sleep(max(0.0, t0 + (i + 1) / 60 - time.monotonic()))
    src.close()
    assert pipe.join(timeout=30)
    s = pipe.summary()
    assert s["dropped"] > 0 and s["frames"] + s["dropped"] == n
    assert src.channel.high_water <= 1
    assert spotter.ring.arrays["x_prime"] is ring_buffer  # pre-allocated, never grown
    assert spotter.merger.tail_slots <= 32
    assert s["windows"] >= 1 and s["stages"]["window"]["p50_ms"] >= 150


def test_worker_exception_surfaces_from_stop_instead_of_hanging(
    tiny: TorchBackend, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "c.mp4", [True] * 60)
    pipe = make_pipeline(FileSource(clip, capacity=2), BrokenBackend(tiny, 0), MergerConfig())
    pipe.start()
    t0 = time.monotonic()
    with pytest.raises(PipelineError, match="backend exploded"):
        while not pipe.join(timeout=0.2):
            assert time.monotonic() - t0 < 20
    assert not pipe.running
    assert not pipe.source.alive


def test_pipeline_counts_and_stage_timings_on_a_file(tiny: TorchBackend, tmp_path: Path) -> None:
    """A 30 FPS file: every frame read, 2 slots per frame, the encoder once per frame."""
    clip = write_clip(tmp_path / "c.mp4", [True] * 45)
    sink = ListSink()
    scores = ScoreLog()
    pipe = make_pipeline(FileSource(clip), tiny, MergerConfig(), 8, [sink], observers=[scores])
    pipe.run()
    s = pipe.summary()
    assert s["frames"] == 45 and s["slots"] == 90 and s["encoded"] == 45
    assert s["windows"] == len(range(0, 90 - 32 + 1, 8)) + 1
    assert set(s["stages"]) >= {"decode", "align", "encode", "window", "merge"}
    assert sink.events[0].type == "face_found"
    _, committed, source_index = scores.arrays()
    assert len(committed) == 90 and np.array_equal(source_index, np.arange(90) // 2)


class Crops(Observer):
    """Every consumed frame's own aligned crop, from the real tracking result."""

    def __init__(self) -> None:
        self.crops: list[np.ndarray | None] = []

    def on_frame(self, frame, tracked) -> None:
        self.crops.append(tracked.crop)


@pytest.mark.slow
def test_face_lost_and_found_with_real_mediapipe(tiny: TorchBackend, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "away.mp4", [True] * 40 + [False] * 20 + [True] * 40)
    sink = ListSink()
    seen = Crops()
    pipe = make_pipeline(FileSource(clip), tiny, MergerConfig(), 8, [sink], observers=[seen])
    pipe.run()
    kinds = [e.type for e in sink.events if e.type != "expression"]
    assert kinds == ["face_found", "face_lost", "face_found"]
    lost = sink.of_type("face_lost")[0]
    found = sink.of_type("face_found")
    assert 40 <= lost.onset_frame <= 44  # hysteresis: lost after 3 missed frames
    assert 60 <= found[1].onset_frame <= 62 and found[1].message == "face re-acquired"
    s = pipe.summary()
    assert s["faces_lost"] == 1 and s["segments"] == 2
    assert len(seen.crops) == 100
    got = [c for c in seen.crops if c is not None]
    assert len(got) >= 75
    assert all(c.shape == (112, 112, 3) and c.dtype == np.uint8 for c in got)
    assert np.mean([c.std() for c in got]) > 20  # real face texture, not blank crops


def test_stop_closes_open_interval_as_interrupted_and_writes_jsonl(
    tiny: TorchBackend, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "c.mp4", [True] * 240, fps=60.0)
    out = tmp_path / "events.jsonl"
    jsonl, seen = JsonlSink(out), ListSink()
    # Thresholds an untrained net always exceeds: an interval opens and is still open at stop().
    cfg = MergerConfig(on_threshold=0.05, off_threshold=0.05, max_expression_s=60.0)
    pipe = make_pipeline(FileSource(clip, pace="live"), tiny, cfg, 8, [jsonl, seen])
    pipe.start()
    deadline = time.monotonic() + 20
    while not any(e.state == "onset" for e in seen.of_type("expression")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pipe.stop()
    jsonl.close()
    assert pipe.interrupted
    events = read_events(out)
    states = [e["state"] for e in events if e["type"] == "expression"]
    assert states[0] == "onset" and states[-1] == "interrupted"
    last = events[-1]
    assert last["event_id"] == events[[e.get("state") for e in events].index("onset")]["event_id"]
    for e in events:
        assert e["stream"] == "0" and e["latency_ms"] >= 0
    expr = [e for e in events if e["type"] == "expression"]
    assert {"label", "onset_s", "apex_s", "onset_frame", "score"} <= set(expr[0])
    assert expr[-1]["offset_s"] >= expr[-1]["onset_s"]
    json.dumps(events)


def test_stage_stats_percentiles_are_thread_safe() -> None:
    st = StageStats()

    def add() -> None:
        for i in range(1000):
            st.add("x", i / 1000)

    ts = [threading.Thread(target=add) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    s = st.summary()["x"]
    assert s["n"] == 4000 and 490 < s["p50_ms"] < 510 and s["p99_ms"] > s["p95_ms"]
