"""``fesnet-bench``: the command line, the run and its report (see the package docstring)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..session import StreamModel
from .align import make_aligner, run_align
from .backends import build_timed_backend, run_model_benchmarks
from .capacity import CapacitySetup, run_capacity
from .config import BenchConfig
from .end_to_end import pipeline_vs_flow, run_end_to_end
from .lag import run_lag
from .plot import plot
from .tier import run_tier_bench, tier_summary
from .timing import face_crops, load_avg, machine_info

SCHEMA = "fesnet-bench/1"


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda s: [kind(x) for x in s.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    from fesnet.model.runtime import BACKEND_CHOICES

    p = argparse.ArgumentParser(
        prog="fesnet-bench",
        description="Latency and throughput of the FESNet spotter on this machine (JSON + PNG).",
    )
    p.add_argument("--checkpoint", help="weights to load (default: the shipped checkpoint)")
    p.add_argument(
        "--config",
        choices=["tiny", "small", "paper"],
        help="benchmark random weights of this config instead of a checkpoint",
    )
    p.add_argument(
        "--backends",
        type=_csv(str),
        default=None,
        help=f"comma list from {','.join(BACKEND_CHOICES[1:])} (default: all available here)",
    )
    p.add_argument("--compile", action="store_true", help="also torch.compile (slow to build)")
    p.add_argument("--threads", type=_csv(int), default=[1], help="comma list, e.g. 1,2")
    p.add_argument("--streams", type=_csv(int), default=[1, 2], help="concurrent streams, 1,2,4")
    p.add_argument("--stride", type=int, default=None,
                   help="window stride in slots (default: the checkpoint's; 8 for --config)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per measured item")
    p.add_argument(
        "--flow",
        type=_csv(str),
        default=["farneback", "tvl1"],
        help="optical-flow baselines to time ('' for none)",
    )
    add_live_arguments(p)
    p.add_argument("--device", default="cpu", help="device of the torch backends (cpu, cuda)")
    p.add_argument("--precision", default="fp16", help="TensorRT precision: fp32|fp16|int8|fp8")
    p.add_argument("--calibration", help="TensorRT int8/fp8 calibration windows (.npz)")
    p.add_argument("--cache-dir", help="where exported/compiled graphs are cached")
    add_tier_arguments(p)
    p.add_argument("--out", default="bench.json", help="JSON report path")
    p.add_argument("--plot", default=None, help="PNG path (default: next to --out)")
    p.add_argument("--no-plot", action="store_true")
    return p


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the runs on a clip: the pipeline, the aligners, the expression lag and
    the capacity of remote cameras."""
    p.add_argument("--video", help="clip for the end-to-end pipeline runs")
    p.add_argument("--pace", choices=["live", "fast"], default="fast")
    p.add_argument(
        "--e2e-backends",
        type=_csv(str),
        default=None,
        help="backends for the pipeline runs (default: onnx if benchmarked, else torch)",
    )
    p.add_argument(
        "--align",
        type=_csv(str),
        default=["before", "every-frame", "periodic"],
        help="aligners to time on --video, the first the reference (before: the first aligner, "
        "landmarks read point by point; every-frame: FaceMesh looks for 2 faces on every frame; "
        "periodic: it follows one and the detector counts faces every 15th frame; near-only: "
        "periodic without the far-face finder; '' for none)",
    )
    p.add_argument(
        "--e2e-align",
        default="periodic",
        help="the pipeline runs' aligner (before, every-frame, periodic, near-only)",
    )
    p.add_argument(
        "--profiles",
        type=_csv(str),
        default=["before", "now"],
        help="settings the live runs compare (before: the first aligner at stride 8 with the "
        "first shipped merger; now: what fesnet-spot runs)",
    )
    p.add_argument(
        "--lag-repeats",
        type=int,
        default=0,
        help="live-paced replays per profile timing each expression's events (0: skip)",
    )
    p.add_argument("--lag-video", help="clip for the expression lag (default: --video)")
    p.add_argument(
        "--capacity",
        type=_csv(int),
        default=[],
        help="numbers of 30 FPS remote cameras (senders in processes of their own) to serve "
        "per profile, e.g. 1,2,3 (default: skip)",
    )
    p.add_argument("--capacity-seconds", type=float, default=10.0, help="measured per level")
    p.add_argument("--capacity-serving", type=_csv(str), default=[],
                   help="how the capacity run's sessions reach the model, each SERVING[:BACKEND] "
                   "(engine: per-stream calls; tier: the shared model tier), e.g. "
                   "engine:onnx,tier:onnx,tier:torch, taking turns level by level (default: the "
                   "live backend's engine)")


def add_tier_arguments(p: argparse.ArgumentParser) -> None:
    """The model-tier mode's options (realtime/bench/tier.py)."""
    from fesnet.model.tier_run import PRECISIONS, TIER_BACKENDS

    p.add_argument("--tier", action="store_true",
                   help="benchmark the model tier only: cameras at 60 FPS per --streams level, "
                   "one camera's latency, and against today's per-stream engine")
    p.add_argument("--tier-backend", choices=TIER_BACKENDS, default="auto",
                   help="the tier's model functions (auto: torch on CUDA, else ONNX Runtime)")
    p.add_argument("--tier-precision", choices=PRECISIONS, default="auto",
                   help="auto: fp16 on CUDA, fp32 on the CPU")
    p.add_argument("--tier-compare", type=_csv(int), default=[1, 2, 4, 8],
                   help="streams run against today's per-stream engine ('' for none)")
    p.add_argument("--tier-max-bucket", type=int, default=None,
                   help="largest model call of the tier (default: 1024 on CUDA, 64 on CPU)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The settings of a parsed command line; backends default to all this machine runs, and
    torch is always measured (the reference every ratio is relative to)."""
    from fesnet.model.backends import available_backends

    backends = args.backends or (["torch"] if args.tier else
                                 available_backends(include_compile=args.compile))
    if "torch" not in backends:
        backends = ["torch", *backends]
    return BenchConfig(
        checkpoint=args.checkpoint,
        model_config=args.config,
        backends=tuple(backends),
        threads=tuple(args.threads),
        streams=tuple(args.streams),
        stride_frames=args.stride,
        seconds=args.seconds,
        flow=tuple(args.flow),
        video=args.video,
        pace=args.pace,
        e2e_backends=tuple(args.e2e_backends) if args.e2e_backends else None,
        align_modes=tuple(args.align),
        e2e_align=args.e2e_align,
        profiles=tuple(args.profiles),
        lag_repeats=args.lag_repeats,
        lag_video=args.lag_video,
        capacity_levels=tuple(args.capacity),
        capacity_seconds=args.capacity_seconds,
        capacity_serving=tuple(args.capacity_serving),
        device=args.device,
        precision=args.precision,
        calibration=args.calibration,
        cache_dir=args.cache_dir,
        tier=args.tier,
        tier_backend=args.tier_backend,
        tier_precision=args.tier_precision,
        tier_compare=tuple(args.tier_compare),
        tier_max_bucket=args.tier_max_bucket,
        tier_compile=args.compile,
    )


def run(config: BenchConfig, command: str) -> dict[str, Any]:
    """Every benchmark ``config`` asks for -> the report (schema ``SCHEMA``)."""
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(),
        "machine": machine_info(),
        "settings": {
            "backends": list(config.backends),
            "threads": list(config.threads),
            "streams": list(config.streams),
            "seconds_per_item": config.seconds,
            "pace": config.pace,
            "video": config.video,
            "device": config.device,
            "stride_frames": config.stride_frames,
            "align_modes": list(config.align_modes),
            "e2e_align": config.e2e_align,
            "profiles": list(config.profiles),
        },
    }
    if config.tier:
        run_tier_bench(config, report)
        report["machine"]["load_avg_1m_at_end"] = load_avg()
        return report
    ck = run_model_benchmarks(config, report)
    config = replace(config, stride_frames=report["model"]["stride_frames"])
    report["settings"]["stride_frames"] = config.stride_frames
    run_align(config, report)
    run_end_to_end(config, report, ck)
    if config.lag_repeats or config.capacity_levels:
        backend = live_backend(config, ck)
        run_lag(config, report, ck, backend)
        capacity(config, report, ck, backend)
    report["pipeline_vs_flow"] = pipeline_vs_flow(report)
    report["machine"]["load_avg_1m_at_end"] = load_avg()
    return report


def capacity(config: BenchConfig, report: dict[str, Any], ck: Any, backend: Any) -> None:
    """``report["capacity"]``: the viewers' capacity run over the profiles ``config`` names,
    every profile's sessions on one engine over ``backend``."""
    from .profiles import PROFILES, hub_settings

    if not config.capacity_levels or config.video is None:
        why = "no --capacity levels given" if not config.capacity_levels else "no --video given"
        report["capacity"] = {"skipped": why}
        return
    setups: list[CapacitySetup] = []
    for serving in config.capacity_serving or ("",):
        model = (serving_model(config, ck, serving) if serving else None)
        for name in config.profiles:
            merger, stride = hub_settings(ck, PROFILES[name])
            if model is None:
                model = StreamModel.over(backend, merger, stride)
            label = name if not serving else serving if len(config.profiles) == 1 \
                else f"{name}/{serving}"
            setups.append(CapacitySetup(label, model.using(merger, stride),
                                        make_aligner(PROFILES[name].align)))
    report["capacity"] = run_capacity(setups, config.capacity_levels, config.video,
                                      config.capacity_seconds, load_avg)


def serving_model(config: BenchConfig, ck: Any, serving: str) -> StreamModel:
    """The stream model of ``SERVING[:BACKEND]``, loaded as every program loads one (the runtime
    loader with ``--serving``; a tier with a ring block for the most cameras of the run)."""
    from fesnet.model.runtime import Runtime, RuntimeConfig

    kind, _, name = serving.partition(":")
    name = name or (config.e2e_backends or [b for b in ("onnx", "torch")
                                            if b in config.backends])[0]
    load = RuntimeConfig(backend=name, threads=min(config.threads), serving=kind,
                         stride_frames=config.stride_frames)
    runtime = Runtime.from_checkpoint(ck, load)
    return StreamModel.of(runtime, max_streams=max(config.capacity_levels))


def live_backend(config: BenchConfig, ck: Any) -> Any:
    """The backend of the live runs (lag, capacity): the first end-to-end one."""
    name = (config.e2e_backends or [b for b in ("onnx", "torch") if b in config.backends])[0]
    crops = face_crops(ck.config.window_frames, ck.config.image_size)
    return build_timed_backend(name, ck, config, min(config.threads), crops)[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"fesnet-bench: {e}", file=sys.stderr)
        return 2
    from fesnet.model.runtime import LoadError

    command = " ".join(["fesnet-bench", *(argv if argv is not None else sys.argv[1:])])
    try:
        report = run(config, command)
    except LoadError as e:
        print(f"fesnet-bench: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"wrote {out}")
    if not args.no_plot and not config.tier:
        png = plot(report, Path(args.plot) if args.plot else out.with_suffix(".png"))
        print(f"wrote {png}")
    return 0


def summary(report: dict[str, Any]) -> str:
    if report.get("tier"):
        return "\n".join(tier_summary(report))
    lines = ["backend         thr  enc f/s  win/s(B=1)  stream f/s  x torch  cached/naive"]
    ratios = {(r["backend"], r["threads"]): r for r in report.get("ratios_vs_torch", [])}
    for r in report.get("backends", []):
        k = (r["backend"], r["threads"])
        lines.append(
            f"{r['backend']:<15} {r['threads']:>3}  {r['encoder_frames_per_s']:>7.1f}  "
            f"{r['windows_per_s']['1']:>10.1f}  {r['stream_frames_per_s']:>10.1f}  "
            f"{ratios.get(k, {}).get('stream_per_frame', float('nan')):>7.2f}  "
            f"{r['cached_vs_naive']:>12.2f}"
        )
    for f in report.get("optical_flow", []):
        lines.append(f"{f['method'] + ' flow':<20} {f['frames_per_s']:>7.1f} frames/s")
    for v in report.get("pipeline_vs_flow", []):
        lines.append(
            f"pipeline ({v['backend']}) {v['ours_frames_per_s']:.1f} frames/s vs {v['flow']} "
            f"pipeline <= {v['flow_pipeline_frames_per_s_upper_bound']:.1f} ({v['speedup']:.2f}x)"
        )
    align = report.get("align", {})
    for mode, a in align.get("modes", {}).items():
        lines.append(
            f"align {mode:<12} p50 {a['per_frame']['p50_ms']:.2f} ms, x {align['reference']}: "
            f"{a['p50_vs_reference']:.3f} (mean {a['mean_vs_reference']:.3f}), crops identical "
            f"{a['crops_identical']:.2%}"
        )
    for name, r in report.get("expression_lag", {}).get("profiles", {}).items():
        fin, on = r["final"], r["onset"]
        lines.append(
            f"lag {name:<8} final p50 {fin.get('p50_ms', float('nan')):.0f} / p99 "
            f"{fin.get('p99_ms', float('nan')):.0f} ms ({fin['n']}), onset p50 "
            f"{on.get('p50_ms', float('nan')):.0f} / p99 {on.get('p99_ms', float('nan')):.0f} ms"
        )
    for name, n in report.get("capacity", {}).get("cameras_served", {}).items():
        lines.append(f"capacity {name:<8} {n} camera(s) at 30 FPS served")
    for name, why in report.get("unavailable", {}).items():
        lines.append(f"{name}: {why}")
    lines += tier_summary(report)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
