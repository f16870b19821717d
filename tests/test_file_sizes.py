"""No source file over 500 lines (the house rule of issue 13): a module that grows past it holds
more than one idea and is split by idea (pure moves), as realtime/push.py, realtime/run_control.py
and realtime/viewers/display.py were."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("model", "realtime", "calibration", "scripts", "tests", "fesnet")
MAX_LINES = 500


def test_no_python_file_is_over_500_lines() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for folder in FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
    }
    assert len(sizes) > 50  # the tree was found
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}
