"""realtime/session.py is the one place a stream is put together: no other module of the project
(product, scripts or tests) constructs a Spotter or a Pipeline, and what it builds keeps the
settings it is given."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from calibration_helpers import FrameIsCropAligner, LevelBackend, make_clip, write_video

from fesnet.model.merger import MergerConfig
from fesnet.realtime.session import StreamModel, open_stream, run_streams
from fesnet.realtime.sinks import ListSink
from fesnet.realtime.sources import FileSource
from fesnet.realtime.tracking import FaceTracker

REPO = Path(__file__).resolve().parents[1]
ASSEMBLED_IN = {"Spotter": "realtime/session.py", "Pipeline": "realtime/session.py"}


def constructions(path: Path) -> set[str]:
    """Names of ASSEMBLED_IN called in ``path`` (``Spotter(...)``, ``spotter.Spotter(...)``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            if name in ASSEMBLED_IN:
                found.add(name)
    return found


def test_only_the_session_module_puts_a_stream_together() -> None:
    files = [p for folder in ("model", "realtime", "calibration", "scripts", "tests")
             for p in (REPO / folder).rglob("*.py")]
    assert len(files) > 100
    where = {
        (name, p.relative_to(REPO).as_posix()) for p in files for name in constructions(p)
    }
    assert where == {(name, module) for name, module in ASSEMBLED_IN.items()}


def test_the_checker_sees_a_construction(tmp_path: Path) -> None:
    src = tmp_path / "x.py"
    src.write_text("from fesnet.realtime import spotter\ns = spotter.Spotter(e, m, 8)\n"
                   "p = Pipeline(src, s)\nSpotterConfig()\n")
    assert constructions(src) == {"Spotter", "Pipeline"}


def test_a_stream_model_checks_its_stride_against_its_window() -> None:
    with pytest.raises(ValueError, match="longer than a window"):
        StreamModel.over(LevelBackend(), MergerConfig(), 33)
    with pytest.raises(ValueError, match=">= 1"):
        StreamModel.over(LevelBackend(), MergerConfig(), 0)


def test_streams_opened_together_run_to_their_ends(tmp_path: Path) -> None:
    """Two streams over one model: each its own stream name and events, both to the end, in
    the one waiting loop."""
    crops = make_clip(90, [(30, 60, 2)], rest=0.1, rest_noise=0.02, seed=5).crops
    video = write_video(tmp_path / "c.mp4", crops, fps=30.0)
    model = StreamModel.over(LevelBackend(), MergerConfig(on_threshold=0.5, off_threshold=0.3), 8)
    sink = ListSink()
    runs = [open_stream(model, FileSource(video, stream=f"s{i}"), [sink],
                        tracker=FaceTracker(FrameIsCropAligner())) for i in range(2)]
    assert run_streams(runs) == [None, None]
    for run in runs:
        summary = run.summary()
        assert summary["frames"] == 90 and not summary["interrupted"] and not run.running
        finals = [e for e in sink.events if e.stream == run.stream and e.state == "final"]
        assert [e.label for e in finals] == ["MaE"]
