"""fesnet-spot: runs on a file and on the bundled sample, clear errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fesnet.model import checkpoint
from fesnet.model.fesnet import FESNet, FESNetConfig
from fesnet.realtime.cli import main
from fesnet.realtime.sinks import read_events

FACES = Path(__file__).resolve().parents[1] / "model" / "data" / "faces"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return checkpoint.save(tmp_path_factory.mktemp("ckpt") / "tiny.pt", FESNet(FESNetConfig.tiny()))


def face_clip(path: Path, n: int = 45) -> Path:
    face = cv2.imread(str(FACES / "wolfgang.jpg"))
    face = cv2.resize(face, None, fx=190 / max(face.shape[:2]), fy=190 / max(face.shape[:2]))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
    for i in range(n):
        canvas = np.full((240, 320, 3), 90, np.uint8)
        dx = 60 + int(8 * np.sin(i / 7))
        fh, fw = face.shape[:2]
        canvas[25 : 25 + fh, dx : dx + fw] = face[: 240 - 25, : 320 - dx]
        out.write(canvas)
    out.release()
    return path


def test_run_on_a_file_writes_events_plot_and_video(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = face_clip(tmp_path / "face.mp4")
    events, plot, video = tmp_path / "ev.jsonl", tmp_path / "tl.png", tmp_path / "ann.mp4"
    rc = main(
        ["run", "--source", str(clip), "--checkpoint", str(tiny_ckpt), "--backend", "torch",
         "--events", str(events), "--plot", str(plot), "--video-out", str(video)]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "face_found" in out and "45 processed, 0 dropped" in out and "latency" in out
    lines = read_events(events)
    assert lines[0]["type"] == "face_found"
    assert plot.stat().st_size > 10_000
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 45
    cap.release()


def test_clear_errors(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--source", str(tmp_path / "nope.mp4"), "--checkpoint", str(tiny_ckpt),
                 "--backend", "torch"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["run", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt not found" in capsys.readouterr().err
    bad = tmp_path / "merger.json"
    bad.write_text('{"on_treshold": 0.5}')
    assert main(["run", "--checkpoint", str(tiny_ckpt), "--backend", "torch",
                 "--merger-config", str(bad)]) == 2
    assert "on_treshold" in capsys.readouterr().err
    assert main(["run", "--source", "webcam:63", "--checkpoint", str(tiny_ckpt),
                 "--backend", "torch"]) == 2
    assert "camera 63" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "webcam:N" in capsys.readouterr().out


@pytest.mark.slow
def test_no_source_runs_the_sample_clip_and_compares_with_truth(
    tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["--checkpoint", str(tiny_ckpt), "--backend", "torch", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "bundled sample clip" in out
    assert "compared with the ground truth" in out and "overall" in out
    assert "600 processed, 0 dropped" in out
