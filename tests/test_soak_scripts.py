"""The soak script of several streams runs and keeps its ledger: a short in-process run of two
live MJPEG cameras on 127.0.0.1 writes its JSON with every stream's events emitted and written,
and the processes sampled (the hour runs are started by hand: docs/RELIABILITY.md, "Soak")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_a_short_soak_of_two_streams_keeps_its_ledger(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "fesnet.realtime.bench.soak_runs", "--minutes", "0.4",
         "--streams", "2", "--warmup-s", "5", "--sample-s", "5", "--width", "320",
         "--height", "240", "--events", str(tmp_path / "events.jsonl"), "--out", str(out)],
        capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [s["stream"] for s in result["per_stream"]] == ["s0", "s1"]
    for s in result["per_stream"]:
        assert s["frames"] > 0 and s["error"] is None
        assert s["events_emitted"] == s["events_written"] > 0 and s["onsets_unpaired"] == 0
    assert result["events_lost"] == 0 and result["ray_processes"] == {}
    assert len(result["samples"]) >= 2
    for key in ("rss_mb", "threads", "fds"):
        assert result["this_process"][key]["max"] > 0
