"""The tier's measurement scripts run: scripts/tier_host_bench.py loads a baseline commit's tier
beside this checkout's and times both on the same load."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np

from fesnet.realtime.bench.tier_load import synthetic_streams

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_host_bench_times_a_baseline_beside_this_checkout() -> None:
    g = runpy.run_path(str(SCRIPTS / "tier_host_bench.py"), run_name="tier_host_bench")
    s = synthetic_streams(1, 40, True, seed=0, fps=(60,))[0]
    for mods in (g["load_baseline"]("HEAD"), g["current"]()):
        assert mods["tier"].__name__ != mods["tier_load"].__name__
        row = g["level"](mods, 3, 4, 2, s.frames, s.geom)
        assert row["stage_ms"] > 0 and row["step_ms"] > 0
        assert np.isclose(row["host_ms"], row["stage_ms"] + row["step_ms"], rtol=0.5)
