"""``fesnet-spot run`` as a careless operator and a hostile input meet it (issue 15): full disks,
unwritable outputs, inputs that cannot be spotted, nonsense option values, Ctrl-C at any moment,
a closed stdout, a network source that never answers; and the exit codes that tell them apart
(realtime/exitcodes.py). Every case ends with one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import resource
import signal
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
from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.sinks import JsonlSink, read_events
from fesnet.realtime.types import SpotEvent

REPO = Path(__file__).resolve().parents[1]
SAMPLE = SAMPLE_CLIP
# The documented exit codes (README "Exit codes"), as a supervisor sees them.
OK, BAD_INPUT, OUTPUT_FAILED, STDOUT_CLOSED = 0, 2, 3, 141


def stopped_by(signum: int) -> int:
    return 128 + signum


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    ckpt = checkpoint.save(d / "tiny.pt", FESNet(FESNetConfig.tiny()))
    busy = d / "busy.json"  # thresholds low enough that intervals open on the sample clip
    busy.write_text(json.dumps({"on_threshold": 0.05, "off_threshold": 0.05,
                                "max_expression_s": 60.0}))
    return {"ckpt": ckpt, "busy": busy, "clip": face_clip(d / "face.mp4")}


def run_args(files: dict[str, Path], *extra: str) -> list[str]:
    return ["run", "--checkpoint", str(files["ckpt"]), "--backend", "torch", *extra]


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("fesnet-spot: error:")]
    assert len(errors) == 1, err
    return errors[0]


def spawn(args: list[str], **kw: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fesnet.realtime.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **kw)


def event(i: int) -> SpotEvent:
    return SpotEvent(type="status", stream="0", t_s=float(i), message=f"event {i} " + "x" * 40)


# -- item 2: a full disk ---------------------------------------------------------------------------
def test_jsonl_sink_writes_whole_lines_or_nothing(tmp_path: Path, monkeypatch) -> None:
    """A write that stops half-way (the disk filled up during it) is cut back to the last whole
    line; the sink then refuses further events instead of leaving holes in the sequence."""
    path = tmp_path / "ev.jsonl"
    sink = JsonlSink(path)
    sink(event(0))
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if fd == sink._fd:
            n = real_write(fd, data[: len(data) // 2])
            monkeypatch.setattr(os, "write", full)
            return n
        return real_write(fd, data)

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        sink(event(1))
    with pytest.raises(OSError):
        sink(event(2))
    monkeypatch.setattr(os, "write", real_write)
    sink.close()
    assert [e["message"][:7] for e in read_events(path)] == ["event 0"]
    assert path.read_bytes().endswith(b"\n")
    assert (sink.count, sink.lost) == (1, 2)


def test_events_to_dev_full_stop_with_exit_3_and_the_summary(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(run_args(files, "--source", str(files["clip"]), "--events", "/dev/full", "--quiet"))
    out, err = capsys.readouterr()
    assert rc == OUTPUT_FAILED
    assert "cannot write events to /dev/full" in one_line_error(err)
    assert "frames " in out and "latency " in out  # the summary is still printed
    assert "(0 written" in out


@pytest.mark.slow
def test_file_size_limit_leaves_only_whole_lines(files: dict[str, Path], tmp_path: Path) -> None:
    """``ulimit -f``: the file reaches the limit mid-line. Only whole lines stay, the run stops
    with exit code 3, one error line and the summary (before: half a line, later events lost
    silently, then an OSError traceback and exit code 1)."""
    events = tmp_path / "full.jsonl"
    limit = 200  # the first line (face_found, ~130 bytes) fits, the next one crosses it

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = spawn(run_args(files, "--source", str(SAMPLE), "--events", str(events), "--quiet",
                          "--merger-config", str(files["busy"])),
                 preexec_fn=small_files)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == OUTPUT_FAILED, (out, err)
    assert "cannot write events to" in one_line_error(err)
    assert "frames " in out and "not written" in out
    data = events.read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n")
    lines = [json.loads(line) for line in data.decode().splitlines()]  # every line is whole
    assert [e["type"] for e in lines] == ["face_found"]


# -- item 10: outputs that cannot be written -------------------------------------------------------
@pytest.mark.parametrize(
    "option, target",
    [
        ("--events", "/proc/x.jsonl"), ("--events", "{dir}"),
        ("--video-out", "/proc/x.mp4"), ("--video-out", "{dir}"), ("--video-out", "{dir}/a.xyz"),
        ("--plot", "/proc/x.png"), ("--plot", "{dir}"), ("--plot", "{dir}/a.notanimage"),
    ],
)
def test_unwritable_outputs_are_refused_before_the_model_loads(
    option: str, target: str, files: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The checkpoint does not exist: an error naming the output proves the output was checked
    first (before: a traceback after the model loaded, or, for --video-out, exit 0 and a path
    printed though nothing was written)."""
    path = target.format(dir=tmp_path)
    rc = main(["run", "--source", str(files["clip"]), "--checkpoint", str(tmp_path / "none.pt"),
               option, path])
    err = capsys.readouterr().err
    assert rc == BAD_INPUT
    line = one_line_error(err)
    assert path in line and "none.pt" not in line
    assert not list(tmp_path.glob("a.*"))  # the check leaves nothing behind


def test_a_plot_that_fails_after_the_run_keeps_the_table(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    def disk_full(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fesnet.realtime.plots.timeline_png", disk_full)
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"intervals": [{"onset": 5, "offset": 20, "label": 2}]}))
    rc = main(run_args(files, "--source", str(files["clip"]), "--plot", str(tmp_path / "t.png"),
                       "--truth", str(truth), "--quiet"))
    out, err = capsys.readouterr()
    assert rc == OUTPUT_FAILED
    assert "cannot write the plot" in one_line_error(err)
    assert "compared with the ground truth" in out and "overall" in out


# -- item 12: inputs that end quietly --------------------------------------------------------------
def _video(path: Path, size: tuple[int, int], n: int, fps: float, image: np.ndarray | None) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=int(fps) if fps >= 1 else 1)
        s.width, s.height, s.pix_fmt = size[0], size[1], "bgr0"
        for _ in range(n):
            img = np.full((size[1], size[0], 3), 90, np.uint8) if image is None else image
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_inputs_that_cannot_be_spotted_say_why(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    face = cv2.imread(str(REPO / "model" / "data" / "faces" / "wolfgang.jpg"))
    cases = {
        "tiny": (_video(tmp_path / "tiny.mkv", (1, 1), 30, 30, None), 2, "too small"),
        "png": (tmp_path / "face.png", 2, "single image"),
        "dir": (tmp_path, 2, "is a directory"),
        "noface": (_video(tmp_path / "blank.mkv", (160, 120), 30, 30, None), 0, "no face"),
        "short": (_video(tmp_path / "short.mkv", face.shape[1::-1], 6, 30, face), 0,
                  "nothing was scored"),
    }
    cv2.imwrite(str(tmp_path / "face.png"), face)
    for name, (path, code, why) in cases.items():
        rc = main(run_args(files, "--source", str(path), "--quiet"))
        out, err = capsys.readouterr()
        assert rc == code, (name, out, err)
        if code:
            assert why in one_line_error(err), name
        else:
            assert "note        " in out and why in out, (name, out)


def test_a_low_frame_rate_is_warned_about(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    face = cv2.imread(str(REPO / "model" / "data" / "faces" / "wolfgang.jpg"))
    clip = _video(tmp_path / "slow.mkv", face.shape[1::-1], 10, 5, face)
    rc = main(run_args(files, "--source", str(clip), "--quiet"))
    err = capsys.readouterr().err
    assert rc == 0
    assert "runs at 5 fps" in err and "ME events are unreliable" in err


# -- item 17: option values ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--stride", "0"], ["run", "--threads", "-1"], ["run", "--threads", "0"],
        ["run", "--calibrate-s", "-1"], ["run", "--calibration-timeout-s", "nan"],
        ["webrtc-server", "--max-peers", "0"], ["webrtc-server", "--port", "70000"],
        ["webrtc-server", "--max-sdp-bytes", "10"], ["serve", "--max-sessions", "0"],
        ["serve", "--port", "-1"], ["serve", "--stride", "0"], ["serve", "--backend", "tpu"],
        ["serve", "--max-upload-mb", "0"], ["remote-camera", "x.mp4", "--duration", "-5"],
        ["run", "--peer-k", "0"], ["run", "--peer-k", "nan"], ["serve", "--peer-k", "-3"],
    ],
)
def test_option_values_out_of_range_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == BAD_INPUT
    assert "error: argument" in err and "Traceback" not in err


def test_a_stride_longer_than_a_window_is_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(run_args(files, "--source", str(files["clip"]), "--stride", "10000"))
    assert rc == BAD_INPUT
    assert "--stride 10000 is longer than a window" in one_line_error(capsys.readouterr().err)


def test_a_hub_refuses_a_stride_longer_than_a_window(tiny_runtime) -> None:
    from fesnet.realtime.engine import Engine
    from fesnet.realtime.session import StreamModel
    from fesnet.realtime.viewers.hub import SpotHub

    engine = Engine(tiny_runtime.backend, tiny_runtime.window_frames)
    with pytest.raises(ValueError, match="stride 10000"):
        SpotHub(StreamModel(engine, tiny_runtime.merger, 10000))


# -- items 11 and 18: signals, start-up, stdout, silent streams ------------------------------------
def _wait_for(cond, proc: subprocess.Popen, what: str, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {what}: {proc.communicate()}")
        if cond():
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {what} within {timeout_s} s")


def _mapped(proc: subprocess.Popen, library: str) -> bool:
    try:
        return library in Path(f"/proc/{proc.pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_start_up_is_one_line(signum: int, files: dict[str, Path]) -> None:
    """Ctrl-C / SIGTERM while the model is still loading (torch being imported): one line and
    128 + N, not a KeyboardInterrupt traceback (SIGINT) or a silent kill (SIGTERM)."""
    proc = spawn(run_args(files, "--source", str(files["clip"])))
    _wait_for(lambda: _mapped(proc, "libtorch"), proc, "torch being loaded")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == stopped_by(signum), (out, err)
    assert "Traceback" not in err and "fesnet-spot: " in err


@pytest.mark.slow
def test_ctrl_c_while_a_network_stream_does_not_answer(files: dict[str, Path]) -> None:
    """A stream that accepts the connection and never sends anything: Ctrl-C ends the run at
    once (before: it waited for OpenCV's 30 s timeout, then printed a traceback)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    connections: list[socket.socket] = []
    threading.Thread(target=lambda: connections.append(server.accept()[0]), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/stream"
        proc = spawn(run_args(files, "--source", url))
        _wait_for(lambda: bool(connections), proc, "a connection to the stream")
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        for c in connections:
            c.close()
        server.close()
    assert proc.returncode == stopped_by(signal.SIGINT), (out, err)
    assert "Traceback" not in err
    assert waited < 10, waited  # OpenCV alone holds an open for 30 s


@pytest.mark.slow
def test_a_closed_stdout_stops_the_run_quietly(files: dict[str, Path], tmp_path: Path) -> None:
    """``fesnet-spot run ... | head -1``: the reader goes away; the run stops (open intervals
    closed in the JSONL), no traceback, exit code 141."""
    events = tmp_path / "ev.jsonl"
    proc = spawn(run_args(files, "--source", str(SAMPLE), "--events", str(events),
                          "--merger-config", str(files["busy"]), "--pace", "live"))
    assert proc.stdout is not None
    _wait_for(lambda: events.exists() and '"state":"onset"' in events.read_text(), proc,
              "an onset")
    proc.stdout.close()  # the pipe's reader exits
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait(timeout=120)
    assert proc.returncode == STDOUT_CLOSED, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    expr = [e for e in read_events(events) if e["type"] == "expression"]
    assert expr
    onsets = sorted(e["event_id"] for e in expr if e["state"] == "onset")
    assert onsets == sorted(e["event_id"] for e in expr if e["state"] != "onset")
