"""What ``fesnet-spot run`` is told to read, as a careless operator gives it (issue 22): a
``--sources`` file that is a device, a FIFO, huge, or only comments; a device or FIFO as a
source; a file FFmpeg cannot open; a single-frame clip; a live source that gives up after its
reconnects. Each ends with its documented exit code and one line on stderr (real processes
where what reaches file descriptor 2 matters; loopback only).
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_cli import face_clip

from fesnet.model import checkpoint
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.realtime.cli import main
from fesnet.realtime.source_list import MAX_BYTES, MAX_LINES, read_source_list

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "model" / "data" / "faces" / "wolfgang.jpg"
BAD_INPUT, FAILED = 2, 1


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    ckpt = checkpoint.save(d / "tiny.pt", FESNet(FESNetConfig.tiny()))
    return {"ckpt": ckpt, "clip": face_clip(d / "face.mp4"), "dir": d}


def run_args(files: dict[str, Path], *extra: str) -> list[str]:
    return ["run", "--checkpoint", str(files["ckpt"]), "--backend", "torch", "--quiet", *extra]


def spawn(args: list[str], **kw: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fesnet.realtime.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **kw)


def finish(proc: subprocess.Popen, timeout_s: float) -> tuple[int, str, str]:
    """The exit code and output; a process still running after ``timeout_s`` is a hang."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running after {timeout_s} s:\n{out[-1500:]}\n{err[-1500:]}")
    return proc.returncode, out, err


def only_line(err: str) -> str:
    """stderr holds exactly one line, the CLI's error (no traceback, no third-party line)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fesnet-spot: error: "), err
    return lines[0]


# -- items 6 and 7: --sources FILE -----------------------------------------------------------------
def test_a_sources_file_that_is_a_device_or_a_fifo_is_refused_at_once(
    files: dict[str, Path],
) -> None:
    """/dev/urandom grew the process to 24 GB, /dev/zero ended in a MemoryError traceback and a
    FIFO without a writer blocked forever. Each run here has 3 GB of address space and two
    minutes: a read without bound fails both."""
    fifo = files["dir"] / "cameras.fifo"
    os.mkfifo(fifo)

    def small_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    for path in ("/dev/urandom", "/dev/zero", str(fifo)):
        proc = spawn(run_args(files, "--sources", path), preexec_fn=small_memory)
        code, _out, err = finish(proc, 120)
        assert code == BAD_INPUT, (path, err[-2000:])
        assert f"--sources {path} is not a regular file" in only_line(err)


@pytest.mark.parametrize(
    "content, why",
    [
        ("# the lobby\n\n   \n# the door\n", "no sources in"),
        ("cam.mp4\n" * (MAX_LINES + 1), f"at most {MAX_LINES}"),
        ("#" * (MAX_BYTES + 1), f"larger than {MAX_BYTES // 1024} KiB"),
        ("cam.mp4\n\0\n", "not a text file"),
        (b"cam\xff.mp4\n", "not UTF-8 text"),
    ],
)
def test_a_sources_file_that_names_nothing_usable_is_refused(
    content: str | bytes, why: str, files: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The checkpoint does not exist: a line about the sources file proves it was refused before
    anything else (before: a comments-only file ran the bundled sample clip, exit 0)."""
    path = tmp_path / "cameras.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc = main(["run", "--sources", str(path), "--checkpoint", str(tmp_path / "none.pt")])
    err = capsys.readouterr().err
    assert rc == BAD_INPUT
    line = only_line(err)
    assert why in line and str(path) in line and "none.pt" not in line


def test_a_sources_file_lists_its_sources_in_order(tmp_path: Path) -> None:
    path = tmp_path / "cameras.txt"
    path.write_text("# lobby\nlobby.mp4\n\n  rtsp://10.0.0.7/door  \n#off.mp4\n")
    assert read_source_list(path) == ["lobby.mp4", "rtsp://10.0.0.7/door"]


def test_the_help_states_the_bounds_of_a_sources_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"at most {MAX_LINES} lines and {MAX_BYTES // 1024} KiB" in text


# -- item 13: what else reaches stderr -------------------------------------------------------------
def test_a_device_or_fifo_as_the_source_says_what_it_is(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "video file /dev/null not found"."""
    fifo = files["dir"] / "video.fifo"
    os.mkfifo(fifo)
    for path in ("/dev/null", str(fifo)):
        rc = main(run_args(files, "--source", path))
        assert rc == BAD_INPUT
        assert f"{path} is not a regular file" in only_line(capsys.readouterr().err)


def _moov_at_the_end_cut(path: Path) -> Path:
    """An mp4 whose index (moov) comes after the frames, cut in half: FFmpeg says "moov atom
    not found" on its own before OpenCV gives up."""
    import av

    whole = path.with_suffix(".whole.mp4")
    with av.open(str(whole), "w") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for i in range(30):
            img = np.full((64, 64, 3), i * 5, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = whole.read_bytes()
    assert data.find(b"moov") > len(data) // 2
    path.write_bytes(data[: len(data) // 2])
    return path


def _one_frame_clip(path: Path) -> Path:
    img = cv2.imread(str(FACE))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, img.shape[1::-1])
    out.write(img)
    out.release()
    return path


@pytest.mark.parametrize("kind", ["moov_missing", "one_frame"])
def test_a_file_that_cannot_be_spotted_gives_one_line(kind: str, files: dict[str, Path]) -> None:
    """Before: FFmpeg's "[mov,mp4,...] moov atom not found" came first; a 1-frame clip printed
    the source's own "source 0 failed: SourceError(...)" log line and then the CLI's line."""
    make = {"moov_missing": _moov_at_the_end_cut, "one_frame": _one_frame_clip}[kind]
    clip = make(files["dir"] / f"{kind}.mp4")
    code, _out, err = finish(spawn(run_args(files, "--source", str(clip))), 240)
    assert code == BAD_INPUT, err
    why = {"moov_missing": "cannot open", "one_frame": "holds a single image"}[kind]
    assert why in only_line(err)


# -- item 16: a live source that gives up after its reconnects ------------------------------------
class OneShotMjpegCamera:
    """An HTTP MJPEG camera on 127.0.0.1 that serves one client ``frames`` frames and is then
    gone for good (its port refuses every reconnect), as a network camera that lost power."""

    def __init__(self, frames: int = 60, fps: float = 30.0) -> None:
        img = cv2.resize(cv2.imread(str(FACE)), (320, 240))
        self.jpeg = cv2.imencode(".jpg", img)[1].tobytes()
        self.frames, self.fps = frames, fps
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/camera.mjpg"
        self.sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        self.server.close()  # every later connect is refused
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; "
                         b"boundary=frame\r\n\r\n")
            part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
            for _ in range(self.frames):
                conn.sendall(part % len(self.jpeg) + self.jpeg + b"\r\n")
                self.sent += 1
                time.sleep(1 / self.fps)


@pytest.mark.slow
def test_a_live_source_that_gives_up_after_its_reconnects_exits_1(
    files: dict[str, Path],
) -> None:
    """The camera streamed, then vanished: 5 reconnect attempts (1 + 2 + ... + 5 s apart), then
    the run ends as a failure while running (exit code 1, README and docs/EVENTS.md), with the
    summary and the reconnect attempts in the JSONL. Before: exit code 2, "refused before any
    work", as if the camera had never been there."""
    camera = OneShotMjpegCamera()
    events = files["dir"] / "live.jsonl"
    code, out, err = finish(spawn(run_args(files, "--source", camera.url,
                                           "--events", str(events))), 240)
    assert camera.sent > 0
    assert code == FAILED, (out[-1500:], err[-1500:])
    line = [ln for ln in err.splitlines() if ln.startswith("fesnet-spot: error: ")]
    assert len(line) == 1 and "reconnect attempts did not help" in line[0], err
    assert "Traceback" not in err
    assert "frames " in out  # the summary
    statuses = [json.loads(ln).get("message", "") for ln in events.read_text().splitlines()]
    assert "source: read failed; reconnecting (attempt 5)" in statuses
