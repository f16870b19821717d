"""Sources: timestamps, named drop policies, bounded memory, errors that surface."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fesnet.realtime.push import PushSource
from fesnet.realtime.sources import (
    EVERY_FRAME,
    LATEST_ONLY,
    FileSource,
    FrameChannel,
    Source,
    SourceError,
    open_source,
)


def write_clip(
    path: Path, n: int = 30, fps: float = 30.0, size: tuple[int, int] = (64, 48)
) -> Path:
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert out.isOpened()
    for i in range(n):
        img = np.full((h, w, 3), (i * 7) % 255, np.uint8)
        out.write(img)
    out.release()
    return path


def test_file_source_reads_every_frame_with_pts(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=30, fps=30.0)
    with open_source(str(clip)) as src:
        assert src.drop_policy == EVERY_FRAME
        frames = list(src)
    assert [f.index for f in frames] == list(range(30))
    pts = np.array([f.pts_s for f in frames])
    assert np.all(np.diff(pts) > 0)
    np.testing.assert_allclose(pts, np.arange(30) / 30.0, atol=1e-3)
    assert src.dropped == 0
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    t = [f.t_capture_ns for f in frames]
    assert t == sorted(t)


def test_file_source_does_not_drop_for_a_slow_consumer(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=20)
    src = FileSource(clip, capacity=2).start()
    got = []
    while (f := src.read(timeout=5)) is not None:
        got.append(f.index)
        time.sleep(0.005)
        assert len(src.channel) <= 2
    src.stop()
    assert got == list(range(20)) and src.dropped == 0


def test_live_paced_file_drops_and_stays_bounded(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=30, fps=100.0)
    src = FileSource(clip, pace="live").start()
    assert src.drop_policy == LATEST_ONLY
    got = []
    t0 = time.monotonic()
    while (f := src.read(timeout=5)) is not None:
        got.append(f.index)
        assert src.channel.high_water <= 1
        time.sleep(0.03)  # a consumer 3x slower than the 100 FPS source
    src.stop()
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.25  # paced: 30 frames at 100 FPS take ~0.3 s
    assert src.dropped > 0
    assert len(got) + src.dropped == 30
    assert got == sorted(got)


def test_open_source_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "missing.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(SourceError):
        src = open_source(str(bad)).start()
        list(src)
        src.stop()
    with pytest.raises(SourceError, match="camera 63 is not present"):
        open_source("webcam:63")
    with pytest.raises(SourceError, match="webcam:0"):
        open_source("0")


class _Exploding(Source):
    drop_policy = EVERY_FRAME

    def _run(self) -> None:
        for i in range(3):
            self._emit(np.zeros((4, 4, 3), np.uint8), i / 30)
        raise OSError("device unplugged")


def test_worker_exception_surfaces_from_stop_and_consumer_does_not_hang() -> None:
    src = _Exploding(stream="x").start()
    frames = []
    while (f := src.read(timeout=5)) is not None:
        frames.append(f)
    assert len(frames) == 3
    with pytest.raises(SourceError, match="device unplugged"):
        src.stop()
    src.stop()  # raised once; a second stop is quiet


def test_stop_releases_a_producer_blocked_on_a_full_queue(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c.mp4", n=40)
    src = FileSource(clip, capacity=1).start()
    assert src.read(timeout=5) is not None
    time.sleep(0.05)  # the reader is now blocked waiting for room
    t0 = time.monotonic()
    src.stop(timeout=5)
    assert time.monotonic() - t0 < 2
    assert src.read(timeout=1) is None


def test_push_source_keeps_latest_and_counts_drops() -> None:
    src = PushSource(stream="rtc").start()
    n = 200

    def producer() -> None:
        for i in range(n):
            src.push(np.full((8, 8, 3), i % 255, np.uint8), pts_s=i / 60)
            time.sleep(0.001)
        src.close()

    th = threading.Thread(target=producer)
    th.start()
    got = []
    while (f := src.read(timeout=5)) is not None:
        got.append(f.index)
        assert len(src.channel) <= 1
        time.sleep(0.01)  # slow consumer
    th.join()
    src.stop()
    assert src.dropped > 0 and len(got) + src.dropped == n
    assert got == sorted(got) and got[-1] == n - 1  # the newest frame is never lost


def test_push_source_failure_surfaces() -> None:
    src = PushSource().start()
    src.push(np.zeros((4, 4, 3), np.uint8), 0.0)
    src.fail(ConnectionError("peer gone"))
    assert src.read(timeout=1) is not None
    assert src.read(timeout=1) is None
    with pytest.raises(SourceError, match="peer gone"):
        src.stop()


def test_channel_timeout_and_policies() -> None:
    ch = FrameChannel(LATEST_ONLY, 1)
    with pytest.raises(TimeoutError):
        ch.get(timeout=0.01)
    with pytest.raises(ValueError):
        FrameChannel("sometimes", 1)
