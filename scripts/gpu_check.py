"""The whole GPU check of the model tier in one run, written as one JSON (docs/GPU.md).

    python scripts/gpu_check.py --out gpu-check.json                 # a GPU machine: < 5 min
    python scripts/gpu_check.py --device cpu --quick --out check.json  # the CI dry run

It needs torch, numpy and opencv only: no mediapipe, aiortc, gradio, ray or tqdm (the model tier
alone, from synthetic crops, with the shipped checkpoint), and this checkout need not be
installed (the ``fesnet.*`` package mapping of pyproject.toml is done here). ``--forbid-imports``
makes any import of the named modules fail, to prove that on a machine that has them.

1. ``reference``: synthetic streams (60 and 30 FPS, geometry vectors with expression-like bumps)
   spotted offline on the CPU in fp32 (``spot_video``): window probabilities and merger events.
2. Per tier configuration (CUDA, by default: fp16 compiled + graphs, fp16 channels-last +
   graphs, strict fp32 + graphs, fp16 + graphs; eager ones when named; CPU: fp32), in a child
   process with its share of ``--budget-s`` and a hard time limit, so a crash or hang of one
   cannot take the others down: ``build`` (compile, graph capture), ``parity`` against the
   reference (max abs difference of window probabilities, share of windows beyond 1e-3; events
   through the real IntervalMerger identical or within the stated tolerance), ``latency`` (one
   camera, p50/p99, and the device's share of it), ``capacity`` (cameras at 60 FPS per level of
   streams, pipelined with staging included, until saturated or out of time) and
   ``capacity_serial`` (the top level measured the first check's way, to compare).
3. ``summary``, and the three done-when numbers printed plainly: cameras at 60 FPS of the best
   configuration, one camera's window step p50, and each configuration's parity against its
   stated tolerance.

Every stage records its result or its error and the run goes on; the JSON is rewritten after
each stage, so even a killed run leaves what it measured. Exit code 0 when every stage ran, 1
when any recorded an error (the JSON says which), 2 on a bad command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.abc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_BARE_GPU = ("mediapipe", "aiortc", "aiohttp", "gradio", "ray", "tqdm", "onnx",
                      "onnxscript", "openpyxl", "playwright", "torch_tensorrt", "modelopt")
GRACE_S = 20.0  # a child's start-up (torch, CUDA) and last write, beyond its share


class Forbid(importlib.abc.MetaPathFinder):
    """Fails every import of the named top-level modules, and remembers the attempts."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)
        self.attempts: list[str] = []

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in self.names:
            self.attempts.append(fullname)
            raise ImportError(f"{fullname} is forbidden here (--forbid-imports)")
        return None


def project_on_path() -> None:
    """``fesnet.model`` = model/, ``fesnet.realtime`` = realtime/ ... of this checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import fesnet

    if str(ROOT) not in fesnet.__path__:
        fesnet.__path__.append(str(ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-check.json", help="the JSON report")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes (the CI dry run)")
    p.add_argument("--budget-s", type=float, default=270.0,
                   help="time for the whole run; children past their share are stopped")
    p.add_argument("--configs", default="", help="comma list of configurations (default: all)")
    p.add_argument("--checkpoint", default=None, help="weights (default: the shipped ones)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the reference")
    p.add_argument("--forbid-imports", default="", help="comma list of modules that must not "
                   "be imported (e.g. " + ",".join(ABSENT_ON_BARE_GPU[:4]) + ")")
    p.add_argument("--run-config", help=argparse.SUPPRESS)  # a child: one configuration
    p.add_argument("--reference", help=argparse.SUPPRESS)
    p.add_argument("--share-s", type=float, default=60.0, help=argparse.SUPPRESS)
    return p


def write_json(path: Path, data: dict[str, Any]) -> None:
    from fesnet.model.graphs import atomic_write

    atomic_write(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def load(args: argparse.Namespace) -> Any:
    """The runtime the shared loader gives: checkpoint, CPU torch backend, merger, stride."""
    from fesnet.model.runtime import RuntimeConfig, load_runtime

    return load_runtime(RuntimeConfig(checkpoint=args.checkpoint, backend="torch",
                                      threads=args.threads))


def settings_of(args: argparse.Namespace) -> Any:
    from fesnet.realtime.bench.tier_check import CheckSettings

    full = CheckSettings()
    if not args.quick:  # on a CPU the rings of thousands of streams would not fit in memory
        return full if args.device == "cuda" else CheckSettings(**{**full.to_dict(),
                                                                   "levels": (1, 2, 4, 8, 16)})
    quick = CheckSettings.quick()
    if args.device == "cuda":
        return CheckSettings(**{**quick.to_dict(), "levels": (1, 64, 1024)})
    return quick


def child(args: argparse.Namespace, forbid: Forbid) -> int:
    """One configuration's stages (the parent reads the JSON it writes)."""
    from fesnet.realtime.bench import tier_check as tc

    t0 = time.perf_counter()
    cfg = next(c for c in tc.CUDA_CONFIGS + tc.CPU_CONFIGS if c.name == args.run_config)
    out: dict[str, Any] = {"config": cfg.name, "settings": cfg.__dict__}
    path = Path(args.out)

    def write() -> None:
        out["blocked_imports"] = forbid.attempts
        write_json(path, out)

    rt = load(args)
    ref = tc.load_reference(Path(args.reference)) if Path(args.reference).is_file() else None
    if ref is None:
        out.setdefault("errors", {})["reference"] = "no reference: parity cannot run"
    deadline = t0 + args.share_s - 5.0
    tc.run_config(cfg, rt.checkpoint, rt.merger, rt.stride_frames, settings_of(args), ref,
                  deadline, out, write)
    write()
    return 1 if out.get("errors") else 0


def run_child(args: argparse.Namespace, cfg: Any, ref: Path, tmp: Path, share_s: float
              ) -> dict[str, Any]:
    out = tmp / f"{cfg.name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-config", cfg.name,
           "--reference", str(ref), "--out", str(out), "--share-s", str(share_s),
           "--device", args.device]
    for flag, value in (("--checkpoint", args.checkpoint), ("--threads", args.threads),
                        ("--forbid-imports", args.forbid_imports or None)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.quick:
        cmd.append("--quick")
    result: dict[str, Any] = {}
    try:
        rc = subprocess.run(cmd, timeout=share_s + GRACE_S, check=False).returncode
    except subprocess.TimeoutExpired:
        rc = None
        result["errors"] = {"process": f"stopped after {share_s + GRACE_S:.0f} s (its share "
                            f"{share_s:.0f} s + {GRACE_S:.0f} s)"}
    if out.is_file():
        written = json.loads(out.read_text())
        errors = {**written.get("errors", {}), **result.get("errors", {})}
        result = {**written, **({"errors": errors} if errors else {})}
    elif rc is not None:
        result.setdefault("errors", {})["process"] = f"exited {rc} before writing anything"
    result["returncode"] = rc
    return result


def parent(args: argparse.Namespace, forbid: Forbid) -> int:
    from fesnet.realtime.bench import tier_check as tc

    started = time.perf_counter()
    path = Path(args.out)
    settings = settings_of(args)
    report: dict[str, Any] = {
        "schema": tc.SCHEMA, "command": " ".join(["scripts/gpu_check.py", *sys.argv[1:]]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(), "device": args.device,
        "settings": settings.to_dict(), "tolerance": tc.TOLERANCE,
        "interval_tolerance_slots": tc.INTERVAL_TOL_SLOTS, "configs": {},
    }

    def write() -> None:
        report["blocked_imports"] = forbid.attempts
        report["elapsed_total_s"] = round(time.perf_counter() - started, 1)
        write_json(path, report)

    info = tc.run_stage(report, "machine", tc.machine, write)
    tmp = Path(tempfile.mkdtemp(prefix="fesnet-gpu-check-"))
    ref_path = tmp / "reference.npz"

    def reference() -> dict[str, Any]:
        rt = load(args)
        geometry = rt.checkpoint.config.geometry_dims > 0
        streams = tc.make_streams(settings, geometry, rt.checkpoint.config.image_size)
        ref = tc.reference(rt.backend, streams, rt.merger, rt.stride_frames)
        tc.save_reference(ref_path, ref)
        return {"checkpoint": str(rt.checkpoint.path), "stride_frames": rt.stride_frames,
                "window_frames": rt.window_frames, "geometry": geometry,
                "windows": [len(r["starts"]) for r in ref],
                "events": [len(r["events"]) for r in ref]}

    tc.run_stage(report, "reference", reference, write)
    wanted = [c for c in args.configs.split(",") if c]
    configs = tc.CPU_CONFIGS if args.device == "cpu" else tc.CUDA_CONFIGS
    configs = tuple(c for c in configs if c.name in wanted or (not wanted and c.default))
    budget_end = started + args.budget_s
    for i, cfg in enumerate(configs):
        left = budget_end - time.perf_counter()
        later = sum(c.share_s for c in configs[i + 1 :])
        # Its share, scaled down when time is short, or what earlier ones left unused.
        share = min(left, max(cfg.share_s * min(1.0, left / (cfg.share_s + later)), left - later))
        if cfg.device == "cuda" and not (info or {}).get("cuda_available"):
            report["configs"][cfg.name] = {"errors": {"skipped": "CUDA is not available"}}
        elif share < 15:
            report["configs"][cfg.name] = {"errors": {"skipped": f"time budget ({left:.0f} s "
                                                                 "left)"}}
        else:
            print(f"== {cfg.name}: up to {share:.0f} s", flush=True)
            report["configs"][cfg.name] = run_child(args, cfg, ref_path, tmp, share)
        write()
    report["summary"] = summarize(report)
    write()
    print(json.dumps(report["summary"], indent=2), flush=True)
    print("\n".join(done_when_lines(report["summary"])), flush=True)
    print(f"wrote {path}", flush=True)
    failed = report.get("errors") or any(c.get("errors") for c in report["configs"].values())
    return 1 if failed else 0


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Per configuration the numbers the issue asks for, and the best of them."""
    rows = {}
    for name, c in report["configs"].items():
        par, lat, cap = c.get("parity") or {}, c.get("latency") or {}, c.get("capacity") or {}
        serial = c.get("capacity_serial") or {}
        rows[name] = {
            "max_abs_diff": par.get("max_abs_diff"),
            "tolerance": par.get("tolerance"),
            "windows_over_1e-3": par.get("windows_over_1e-3"),
            "probs_within_tolerance": par.get("probs_within_tolerance"),
            "events_identical": par.get("events_identical"),
            "events_within_tolerance": par.get("events_within_tolerance"),
            "latency_p50_ms": (lat.get("window_step_ms") or {}).get("p50_ms"),
            "latency_p99_ms": (lat.get("window_step_ms") or {}).get("p99_ms"),
            "latency_device_p50_ms": (((lat.get("device_ms") or {}).get("window_step") or {})
                                      .get("device") or {}).get("p50_ms"),
            "cameras_at_60fps": cap.get("cameras_at_60fps"),
            "capacity_stopped": cap.get("stopped"),
            "serial_cameras_at_60fps": serial.get("cameras_at_60fps"),
            "serial_streams": serial.get("streams"),
            "errors": sorted(c.get("errors", {})),
        }
    cams = {n: r["cameras_at_60fps"] for n, r in rows.items() if r["cameras_at_60fps"]}
    lats = {n: r["latency_p50_ms"] for n, r in rows.items() if r["latency_p50_ms"] is not None}
    gpus = [(c.get("machine") or {}).get("gpu") for c in report["configs"].values()]
    return {
        "gpu": next((g for g in gpus if g), None),
        "configs": rows,
        "best_cameras_at_60fps": max(cams.items(), key=lambda kv: kv[1]) if cams else None,
        "best_latency_p50_ms": min(lats.items(), key=lambda kv: kv[1]) if lats else None,
        "errors": sorted(report.get("errors", {})),
    }


def done_when_lines(summary: dict[str, Any]) -> list[str]:
    """The three done-when numbers, plainly: capacity, one camera's latency, parity."""
    best, lat = summary.get("best_cameras_at_60fps"), summary.get("best_latency_p50_ms")
    lines = ["== done when: >= 2,000 cameras at 60 FPS, one camera p50 <= 1 ms, parity within "
             "the stated tolerance =="]
    if best:
        lines.append(f"cameras at 60 FPS: {best[1]:,} ({best[0]}; pipelined, staging included) "
                     f"-> {'met' if best[1] >= 2000 else 'NOT met'}")
    else:
        lines.append("cameras at 60 FPS: not measured")
    if lat:
        lines.append(f"one camera's window step p50: {lat[1]:.3f} ms ({lat[0]}) -> "
                     f"{'met' if lat[1] <= 1.0 else 'NOT met'}")
    else:
        lines.append("one camera's window step p50: not measured")
    for name, r in summary["configs"].items():
        if r["max_abs_diff"] is None:
            lines.append(f"parity {name}: not measured {r['errors']}")
            continue
        events = ("identical" if r["events_identical"] else "within 2 slots"
                  if r["events_within_tolerance"] else "DIFFERENT")
        lines.append(f"parity {name}: max abs diff {r['max_abs_diff']:.2e} vs tolerance "
                     f"{r['tolerance']:.0e} -> {'ok' if r['probs_within_tolerance'] else 'OVER'}"
                     f"; windows > 1e-3: {100 * (r['windows_over_1e-3'] or 0):.1f}%; events "
                     f"{events}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    forbid = Forbid([m for m in args.forbid_imports.split(",") if m])
    sys.meta_path.insert(0, forbid)
    project_on_path()
    return child(args, forbid) if args.run_config else parent(args, forbid)


if __name__ == "__main__":
    sys.exit(main())
