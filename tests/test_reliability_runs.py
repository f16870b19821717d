"""Several streams in one ``fesnet-spot run`` keep the promises one stream keeps (issue 22): a
full disk is exit 3 with one line and every stream's summary while the console keeps printing,
and SIGINT / SIGTERM are 130 / 143 with the summaries and every open interval closed as
``interrupted``. The same run code serves one stream, several, and streams on Ray (whose
faults are in test_cluster.py)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_reliability_cli import (
    OUTPUT_FAILED,
    SAMPLE,
    files,  # noqa: F401 (the module's fixture)
    one_line_error,
    run_args,
    stopped_by,
)
from test_reliability_media import assert_paired

from fesnet.realtime.cli import main
from fesnet.realtime.sinks import read_events
from fesnet.realtime.types import SpotEvent


def test_several_streams_to_a_full_disk_stop_with_exit_3_and_every_summary(
    files: dict[str, Path],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each stream's first event cannot be written: the run stops (exit 3), one line says why,
    and the console, a sink of its own, still printed what happened (before: the file and the
    console were one sink, every event raised, the console went silent and the run exited 0
    with nothing on stderr)."""
    clip = str(files["clip"])
    rc = main(run_args(files, "--source", clip, "--source", clip, "--events", "/dev/full"))
    out, err = capsys.readouterr()
    assert rc == OUTPUT_FAILED
    assert "cannot write events to /dev/full" in one_line_error(err)
    assert "\n[s0]\n" in out and "\n[s1]\n" in out  # every stream's summary
    assert out.count("frames      ") == 2 and "(0 written" in out
    # The first event that could not be written was still printed (the run stopped at it, so
    # the other stream may have ended before its first event).
    assert " face_found: " in out


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_several_streams_stopped_by_a_signal_say_so_and_close_their_intervals(
    signum: int,
    files: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two live-paced streams, each with an interval open: SIGINT / SIGTERM ends the run with
    128 + N, every stream's summary and every onset closed (before: exit 0)."""
    events = tmp_path / "ev.jsonl"

    def signal_once_both_opened() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = events.read_text() if events.exists() else ""
            whole = text[: text.rfind("\n") + 1].splitlines()  # lines written so far
            opened = {json.loads(line)["stream"] for line in whole if '"state":"onset"' in line}
            if len(opened) == 2:
                os.kill(os.getpid(), signum)  # handled on the main thread, inside the run
                return
            time.sleep(0.05)

    threading.Thread(target=signal_once_both_opened, daemon=True).start()
    rc = main(run_args(files, "--source", str(SAMPLE), "--source", str(SAMPLE), "--events",
                       str(events), "--merger-config", str(files["busy"]), "--pace", "live",
                       "--quiet"))
    out, err = capsys.readouterr()
    assert rc == stopped_by(signum), (out, err)
    assert "Traceback" not in err
    assert out.count("(stopped early: open intervals interrupted)") == 2
    written = [SpotEvent(**{k: v for k, v in d.items() if k != "run"})
               for d in read_events(events)]
    for stream in ("s0", "s1"):
        mine = [e for e in written if e.stream == stream]
        assert any(e.state == "interrupted" for e in mine)
        assert_paired(mine)


def test_two_runs_appending_to_one_events_file_tell_their_lines_apart(
    files: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two runs of one source append to one ``--events`` file: every line names its run, the
    runs' ids differ and each summary says its own, and (run, stream, event_id) pairs every
    onset with its end (before: both wrote stream "0" with the same event ids, nothing told
    their lines apart and neither said so)."""
    events = tmp_path / "ev.jsonl"
    args = run_args(files, "--source", str(files["clip"]), "--events", str(events),
                    "--merger-config", str(files["busy"]), "--quiet")
    summaries = []
    for _ in range(2):
        assert main(args) == 0
        summaries.append(capsys.readouterr().out)
    lines = read_events(events)
    runs = list(dict.fromkeys(line["run"] for line in lines))
    assert len(runs) == 2
    for run, summary in zip(runs, summaries, strict=True):
        assert f"written, run {run})" in summary
    assert sum(a["run"] != b["run"] for a, b in itertools.pairwise(lines)) == 1  # appended
    onsets = [(e["run"], e["stream"], e["event_id"]) for e in lines if e.get("state") == "onset"]
    ends = [(e["run"], e["stream"], e["event_id"]) for e in lines
            if e["type"] == "expression" and e["state"] != "onset"]
    assert {run for run, _, _ in onsets} == set(runs)  # each run opened an interval
    assert len(set(onsets)) == len(onsets) and sorted(onsets) == sorted(ends)
