"""``fesnet-calibrate``: fit merger thresholds, record neutral profiles, write INT8 data.

    fesnet-calibrate fit --data synthetic --split val --out merger.json --plot tradeoff.png
    fesnet-calibrate baseline --source webcam:0 --name alice        # 3 s neutral face -> profile
    fesnet-calibrate profiles [NAME]                                # list / show
    fesnet-calibrate int8 --data synthetic --n 128 --out calib.npz  # TensorRT INT8/FP8 data
    fesnet-calibrate neutral --sessions 2                           # does calibration help?

Exit codes: 0 done, 1 failed while running, 2 bad input (message says what to do).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fesnet.model.runtime import add_runtime_arguments

DEFAULT_CACHE = Path(".cache/aligned")


class UsageError(Exception):
    """Bad input the user can fix; printed without a traceback, exit code 2."""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    add_runtime_arguments(p, backend="torch", backends=("torch", "onnx"))


def _add_data_args(p: argparse.ArgumentParser, default_split: str) -> None:
    p.add_argument("--data", choices=("synthetic", "casme2", "sammlv"), default="synthetic")
    p.add_argument("--root", type=Path, help="dataset folder (CAS(ME)^2 / SAMM-LV layout)")
    p.add_argument("--split", choices=("train", "val", "test"), default=default_split,
                   help="synthetic split; for casme2/sammlv 'test' is the fold's held-out part "
                   "and anything else its training part")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="0: leave one subject out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration-s", type=float, default=40.0, help="synthetic clip length")
    p.add_argument("--videos-per-identity", type=int,
                   help="synthetic: plain-look clips per identity (look clips keep their count)")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fesnet-calibrate",
        description="Calibration for the FESNet spotter: merger threshold fitting, per-person "
        "neutral profiles and TensorRT INT8/FP8 calibration windows (docs/CALIBRATION.md).",
    )
    sub = parser.add_subparsers(dest="command")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    fit = sub.add_parser("fit", formatter_class=fmt,
                         help="fit merger thresholds/durations on labelled clips")
    _add_data_args(fit, "val")
    _add_model_args(fit)
    fit.add_argument("--metric", choices=("overall", "ME", "MaE", "edit", "acc"),
                     default="overall", help="what the search maximises")
    fit.add_argument("--quick", action="store_true", help="coarse search space")
    fit.add_argument("--out", type=Path, default=Path("merger.json"),
                     help="fitted merger config (load with fesnet-spot run --merger-config)")
    fit.add_argument("--plot", type=Path, help="ME-vs-MaE F1 trade-off PNG")
    fit.add_argument("--report", type=Path, help="JSON with every evaluated config")
    fit.add_argument(
        "--update-checkpoint", action="store_true",
        help="also write the fitted merger, the window stride it was fitted at and the neutral "
        "reference into the checkpoint's JSON (its default settings; the reference turns on the "
        "relative calibration rule)",
    )

    base = sub.add_parser("baseline", formatter_class=fmt,
                          help="record a neutral profile from a source (keep a neutral face)")
    base.add_argument("--source", required=True, help="video file, webcam:N or rtsp://...")
    base.add_argument("--name", required=True, help="profile name")
    base.add_argument("--profiles-dir", type=Path, help="default ~/.config/fesnet/profiles")
    base.add_argument("--duration-s", type=float, default=3.0)
    base.add_argument("--timeout-s", type=float, default=20.0)
    base.add_argument("--quantile", type=float, default=0.99, help="absolute rule: rest quantile")
    base.add_argument("--margin", type=float, default=0.05)
    base.add_argument("--allow-lower", action="store_true",
                      help="a quiet resting face may also lower the thresholds")
    base.add_argument(
        "--rule", choices=("auto", "relative", "absolute"), default="auto",
        help="relative: move the thresholds by how far this rest differs from the checkpoint's "
        "neutral reference (auto uses it when the checkpoint has one); absolute: rest quantile "
        "+ margin (docs/CALIBRATION.md)",
    )
    _add_model_args(base)

    prof = sub.add_parser("profiles", help="list saved profiles, or show one")
    prof.add_argument("name", nargs="?")
    prof.add_argument("--profiles-dir", type=Path)

    int8 = sub.add_parser("int8", formatter_class=fmt,
                          help="write INT8/FP8 calibration windows for TensorRT")
    _add_data_args(int8, "train")
    int8.add_argument("--n", type=int, default=128, help="number of windows")
    int8.add_argument("--checkpoint", type=Path,
                      help="the model the windows are for: its window length (default: shipped)")
    int8.add_argument("--expression-fraction", type=float, default=0.5)
    int8.add_argument("--out", type=Path, default=Path("calibration_windows.npz"))

    neu = sub.add_parser("neutral", formatter_class=fmt,
                         help="measure per-person calibration on synthetic sessions whose "
                         "neutral face differs")
    neu.add_argument("--identities", choices=("test", "train"), default="test")
    neu.add_argument("--sessions", type=int, default=2, help="sessions per identity")
    neu.add_argument("--duration-s", type=float, default=30.0)
    neu.add_argument("--neutral-s", type=float, default=3.0)
    neu.add_argument("--seed", type=int, default=0)
    neu.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    neu.add_argument("--out", type=Path, help="write the result JSON here")
    _add_model_args(neu)
    return parser


def _runtime(args: argparse.Namespace) -> Any:
    """The model, loaded as every program loads it (fesnet.model.runtime)."""
    from fesnet.model.runtime import LoadError, load_runtime, runtime_config

    try:
        return load_runtime(runtime_config(args))
    except LoadError as e:
        raise UsageError(str(e)) from e


def _videos(args: argparse.Namespace) -> list[Any]:
    from fesnet.model.datasets import SyntheticSetConfig, real_split, synthetic_split

    if args.data == "synthetic":
        n = args.videos_per_identity
        cfg = SyntheticSetConfig(duration_s=args.duration_s, seed=args.seed)
        if n is not None:
            cfg = SyntheticSetConfig(
                train_videos_per_identity=n,
                val_videos_per_identity=n,
                test_videos_per_identity=n,
                duration_s=args.duration_s,
                seed=args.seed,
            )
        return synthetic_split(args.split, args.cache_dir, cfg)
    if args.root is None:
        raise UsageError(f"--data {args.data} needs --root (the dataset folder)")
    try:
        train, test = real_split(args.data, args.root, args.cache_dir, args.fold, args.folds,
                                 args.seed)
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from e
    return test if args.split == "test" else train


def cmd_fit(args: argparse.Namespace) -> int:
    from .fit import SearchSpace, fit_merger, neutral_reference, score_videos, tradeoff_png

    runtime = _runtime(args)
    ckpt, base, stride = runtime.checkpoint, runtime.merger, runtime.stride_frames
    videos = _videos(args)
    if not videos:
        raise UsageError("no videos to fit on")
    print(f"scoring {len(videos)} clips once (stride {stride}) ...")
    scored = score_videos(runtime.backend, videos, runtime.window_frames, stride)
    space = SearchSpace.small() if args.quick else SearchSpace()
    result = fit_merger(scored, base, space, args.metric)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result.best.to_json(args.out)
    b, t = result.base_table, result.table
    print(f"evaluated {len(result.trials)} merger configs on {len(scored)} clips")
    print(f"base   F1 ME {b.f1['ME']:.2f}  MaE {b.f1['MaE']:.2f}  overall {b.f1['overall']:.2f}")
    print(f"fitted F1 ME {t.f1['ME']:.2f}  MaE {t.f1['MaE']:.2f}  overall {t.f1['overall']:.2f}")
    print(f"merger config {args.out} (fesnet-spot run --merger-config {args.out})")
    reference = neutral_reference(scored, result.best)
    if reference is not None:
        levels = ", ".join(f"q{q} {p:.4f}" for q, p in reference["p_expr"].items())
        print(f"neutral reference: p_expr {levels} over {reference['pieces']} calm "
              f"{reference['piece_s']:g} s pieces")
    if args.update_checkpoint:
        from fesnet.model import checkpoint as ckpt_mod

        fit_doc = {
            "by": f"fesnet-calibrate fit --data {args.data} --split {args.split} "
            f"--metric {args.metric} --stride {stride}",
            f"{args.split}_overall_f1_base": round(b.f1["overall"], 2),
            f"{args.split}_overall_f1_fitted": round(t.f1["overall"], 2),
        }
        # The merger was fitted on windows every `stride` slots: the runtime must score them so.
        ckpt_mod.update_meta(ckpt.path, merger=result.best.to_dict(), merger_fit=fit_doc,
                             neutral_reference=reference, stride_frames=stride)
        print(f"checkpoint    {ckpt_mod.sidecar(ckpt.path)} updated (merger, window stride "
              f"{stride}, neutral reference)")
    if args.plot is not None:
        tradeoff_png(result, args.plot)
        print(f"plot          {args.plot}")
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        report = {**result.to_dict(), "neutral_reference": reference}
        args.report.write_text(json.dumps(report, indent=1) + "\n")
        print(f"report        {args.report}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from fesnet.realtime.pipeline import PipelineError
    from fesnet.realtime.session import StreamModel, open_stream
    from fesnet.realtime.sinks import ConsoleSink
    from fesnet.realtime.sources import SourceError, open_source

    from .baseline import BaselineConfig, CalibrationError, calibration_phase
    from .profile import ProfileError, ThresholdRule, check_name, checkpoint_rule, save_profile

    runtime = _runtime(args)
    ckpt = runtime.checkpoint
    try:
        check_name(args.name)
        rule = ThresholdRule(args.quantile, args.margin, args.allow_lower)
        if args.rule != "absolute":
            relative = checkpoint_rule(ckpt.meta)
            if relative is None and args.rule == "relative":
                raise UsageError(f"{ckpt.path} has no neutral_reference "
                                 "(fesnet-calibrate fit --update-checkpoint)")
            rule = relative or rule
        phase = BaselineConfig(args.duration_s, args.timeout_s, rule)
    except (ProfileError, ValueError) as e:
        raise UsageError(str(e)) from e
    try:
        source = open_source(args.source, pace="live")
    except SourceError as e:
        raise UsageError(str(e)) from e
    saved: list[Path] = []
    record = calibration_phase(
        phase, args.name, lambda p: saved.append(save_profile(p, args.profiles_dir)),
        source.describe(),
    )
    run = open_stream(StreamModel.of(runtime), source, [ConsoleSink()], phase=record)
    calibration = run.phase
    assert calibration is not None
    print(f"keep a neutral face towards the camera for {args.duration_s:g} s ...")
    try:
        run.run(stop_when=lambda: not calibration.running, poll_s=0.1)
    except PipelineError as e:
        cause = e.__cause__ or e
        if isinstance(cause, (CalibrationError, SourceError)):
            print(f"fesnet-calibrate: error: {cause}", file=sys.stderr)
            return 2
        raise
    if not saved:
        print("fesnet-calibrate: error: no profile was recorded", file=sys.stderr)
        return 1
    print(f"profile {args.name!r} saved to {saved[0]} (fesnet-spot run --profile {args.name})")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from .profile import ProfileError, list_profiles, load_profile, profiles_dir

    if args.name is None:
        names = list_profiles(args.profiles_dir)
        print(f"{len(names)} profile(s) in {profiles_dir(args.profiles_dir)}")
        for name in names:
            print(f"  {name}")
        return 0
    try:
        profile = load_profile(args.name, args.profiles_dir)
    except ProfileError as e:
        raise UsageError(str(e)) from e
    print(json.dumps(profile.to_dict(), indent=2))
    return 0


def cmd_int8(args: argparse.Namespace) -> int:
    from fesnet.model.quantization_windows import sample_windows, write_windows
    from fesnet.model.runtime import LoadError, load_checkpoint

    try:
        ck = load_checkpoint(args.checkpoint)
    except LoadError as e:
        raise UsageError(str(e)) from e
    videos = _videos(args)
    try:
        windows, names, geom = sample_windows(videos, args.n, ck.config.window_frames,
                                              args.expression_fraction, args.seed, ck.geometry)
    except ValueError as e:
        raise UsageError(str(e)) from e
    path = write_windows(args.out, windows, names, geom)
    n_videos = len({n.rsplit("@", 1)[0] for n in names})
    print(f"{len(windows)} windows {windows.shape[1:]} uint8 from {n_videos} clips -> {path} "
          f"(the TensorRT backend: precision int8/fp8, calibration={path})")
    return 0


def cmd_neutral(args: argparse.Namespace) -> int:
    from fesnet.model.data.identities import train_test_identities

    from .experiment import DEFAULT_RULES, make_sessions, run_neutral_experiment
    from .fit import REFERENCE_QUANTILES
    from .profile import checkpoint_rule

    runtime = _runtime(args)
    ckpt, base = runtime.checkpoint, runtime.merger
    train_ids, test_ids = train_test_identities()
    ids = test_ids if args.identities == "test" else train_ids
    sessions = make_sessions(ids, args.sessions, args.cache_dir, args.duration_s,
                             args.neutral_s, args.seed)
    rules = dict(DEFAULT_RULES)
    for q in REFERENCE_QUANTILES:
        relative = checkpoint_rule(ckpt.meta, q)
        if relative is not None:
            rules[f"relative q{q:g} (fit rest {relative.reference:.3f})"] = relative
    if len(rules) == len(DEFAULT_RULES):
        print("the checkpoint has no neutral_reference: the relative rule is not measured "
              "(fesnet-calibrate fit --update-checkpoint)")
    result = run_neutral_experiment(runtime.backend, sessions, base, rules,
                                    stride_frames=runtime.stride_frames)
    print(f"{len(sessions)} sessions ({args.identities} identities), base thresholds on "
          f"{base.on_threshold:.3f} / off {base.off_threshold:.3f}")
    print(result.to_markdown())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
        print(f"result {args.out}")
    return 0


COMMANDS = {
    "fit": cmd_fit,
    "baseline": cmd_baseline,
    "profiles": cmd_profiles,
    "int8": cmd_int8,
    "neutral": cmd_neutral,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"fesnet-calibrate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
