"""The model tier's host work per tick, this checkout against a baseline commit, in one run: what
the host spends staging N cameras' crops and submitting a step, with a stand-in model so the
host's share is all that is measured (a CPU benchmark of CPU work; the GPU check measures the
device).

    python scripts/tier_host_bench.py --baseline c2b8d28 --streams 1,1024,4096 --out host.json

The baseline's ``model/tier*.py`` and ``realtime/bench/tier_load.py`` are read with
``git show`` into a temporary package, so both versions run in this process, interleaved
level by level and repeat by repeat (same machine load). Per level, each version runs
``--ticks`` ticks of a 60 FPS load (``TickLoad``: a new crop per camera per tick, a window every
``--stride`` ticks; one staging thread): *stage* is writing the tick's crops into the tier's
staging buffer, *step* the tier's own host work until the probabilities are on the host. The
stand-in model does almost nothing, but on a CPU the tier's copy of the crops into its input
buffer is a memcpy (on CUDA an asynchronous copy engine transfer): *step* includes it in both
versions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = {"tier_plan": "model/tier_plan.py", "tier_host": "model/tier_host.py",
         "tier": "model/tier.py", "tier_load": "realtime/bench/tier_load.py"}
OPTIONAL = {"tier_host"}  # not in every commit


class StandIn:
    """TierFunctions that read one byte of each crop: the host's work is all that is left."""

    device = torch.device("cpu")
    feature_dtype = torch.float32

    def encode(self, crops_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = crops_u8[:, 0, 0, :1].float()[:, :, None, None]  # (N, 1, 1, 1)
        return v, v

    def window(self, x_prime: torch.Tensor, x_atten: torch.Tensor,
               geom: torch.Tensor | None) -> torch.Tensor:
        s = x_prime.reshape(x_prime.shape[0], x_prime.shape[1], 1)
        return torch.softmax(s.expand(-1, -1, 3), dim=-1)


def load_baseline(ref: str) -> dict[str, types.ModuleType]:
    """The baseline's three modules, imported under ``fesnet_baseline``."""
    pkg = types.ModuleType("fesnet_baseline")
    pkg.__path__ = []
    sys.modules["fesnet_baseline"] = pkg
    tmp = Path(tempfile.mkdtemp(prefix="tier-baseline-"))
    out = {}
    for name, path in FILES.items():
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"],
                               capture_output=True, text=True)
        if shown.returncode != 0 and name in OPTIONAL:
            continue
        shown.check_returncode()
        src = (shown.stdout.replace("from .geometry", "from fesnet.model.geometry")
               .replace("from .tier_", "from fesnet_baseline.tier_")
               .replace("from fesnet.model.tier import", "from fesnet_baseline.tier import")
               .replace("from ..", "from fesnet.realtime.")
               .replace("from .timing", "from fesnet.realtime.bench.timing"))
        file = tmp / f"{name}.py"
        file.write_text(src)
        spec = importlib.util.spec_from_file_location(f"fesnet_baseline.{name}", file)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        out[name] = mod
    return out


def current() -> dict[str, types.ModuleType]:
    import fesnet.model.tier as tier
    import fesnet.model.tier_plan as tier_plan
    import fesnet.realtime.bench.tier_load as tier_load

    return {"tier_plan": tier_plan, "tier": tier, "tier_load": tier_load}


def level(mods: dict[str, types.ModuleType], n: int, stride: int, ticks: int,
          pool: np.ndarray, geom: np.ndarray) -> dict[str, float]:
    """Median ms per tick: stage, step (submit + result), and their sum."""
    buckets = tuple(1 << k for k in range(11))
    tier = mods["tier"].ModelTier(StandIn(), window_frames=32, geometry_dims=geom.shape[1],
                                  max_streams=n, ring_slots=48, buckets=buckets,
                                  max_bucket=1024)
    load = mods["tier_load"].TickLoad(tier, n, stride, pool, geom)
    for _ in range(32 + stride):
        tier.step(load.batch())
    stage, step = [], []
    for _ in range(ticks):
        t0 = time.perf_counter()
        batch = load.batch()
        t1 = time.perf_counter()
        tier.step(batch)
        t2 = time.perf_counter()
        stage.append(t1 - t0)
        step.append(t2 - t1)
    load.close()
    st, sp = float(np.median(stage)) * 1e3, float(np.median(step)) * 1e3
    return {"stage_ms": round(st, 4), "step_ms": round(sp, 4),
            "host_ms": round(float(np.median(np.add(stage, step))) * 1e3, 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="git commit of the baseline tier")
    p.add_argument("--streams", default="1,64,1024,4096")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ticks", type=int, default=20)
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("tier-host.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from fesnet.realtime.bench.tier_load import synthetic_streams

    versions = {"baseline": load_baseline(args.baseline), "current": current()}
    s = synthetic_streams(1, 64, True, seed=0, fps=(60,))[0]
    rows: list[dict[str, Any]] = []
    for n in [int(x) for x in args.streams.split(",")]:
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in versions}
        for _ in range(args.repeats):
            for name, mods in versions.items():
                runs[name].append(level(mods, n, args.stride, args.ticks, s.frames, s.geom))
        row: dict[str, Any] = {"streams": n}
        for name, rs in runs.items():
            row[name] = {k: round(float(np.median([r[k] for r in rs])), 4) for k in rs[0]}
        row["baseline_over_current"] = {k: round(row["baseline"][k] / row["current"][k], 2)
                                        for k in row["current"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"command": " ".join(["scripts/tier_host_bench.py", *(argv or sys.argv[1:])]),
              "baseline": args.baseline, "levels": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
