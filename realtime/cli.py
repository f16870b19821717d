"""``fesnet-spot``: spot micro/macro-expressions in a video file, a webcam or a stream.

    fesnet-spot                                   # the bundled sample clip, compared to its truth
    fesnet-spot run --source clip.mp4 --events out.jsonl --plot timeline.png
    fesnet-spot run --source webcam:0 --pace live
    fesnet-spot run --source rtsp://host/stream --backend torch
    fesnet-spot run --source webcam:0 --calibrate --profile alice   # 3 s neutral face first
    fesnet-spot run --source webcam:0 --profile alice               # reuse alice's profile

Exit codes (realtime/exitcodes.py): 0 done; 1 failed while running; 2 refused before any work
(a bad source, checkpoint, merger config, option value or output path), with a message saying
what to do; 3 an output could not be written during the run (the summary is still printed);
130 / 143 stopped by SIGINT / SIGTERM (open intervals closed as "interrupted"); 141 stdout closed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from fesnet.argtypes import float_range
from fesnet.model.runtime import add_runtime_arguments

from . import exitcodes, source_list
from .annotated import AnnotatedVideo
from .cluster.config import ClusterError, ClusterUnavailable, add_cluster_arguments
from .cluster.local import add_arguments as add_local_cluster_arguments
from .outputs import OutputError, check_plot_path
from .run_control import RunControl, explain_quiet_run, silence_stdout
from .sample_clip import SAMPLE_CLIP, SAMPLE_TRUTH
from .viewers import commands as viewer_commands

MIN_ME_FPS = 15.0  # below this an ME (< 0.5 s) spans a few frames and one changed frame is enough


class UsageError(Exception):
    """Bad input the user can fix; printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fesnet-spot",
        description="Real-time facial micro-/macro-expression spotting with FESNet. Events are "
        "written as JSON Lines (schema: docs/EVENTS.md) and printed as they happen.",
        epilog="With no --source the bundled sample clip is used (a real face with synthetic "
        "expressions) and the events are compared to its ground truth.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser(
        "run",
        help="spot expressions in a source",
        description="Spot expressions in a video file, webcam or network stream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Exit codes: 0 done; 1 failed while running; 2 refused before any work (bad "
        "source, checkpoint, option or output path); 3 an output could not be written during "
        "the run; 130 / 143 stopped by SIGINT / SIGTERM; 141 stdout closed.",
    )
    run.add_argument(
        "--source", action="append",
        help="video file path, webcam:N (local camera N) or rtsp://... / http(s)://... "
        "(default: the bundled sample clip; a webcam is never opened unless asked for). "
        "Repeat it for several streams",
    )
    run.add_argument("--sources", type=Path, help=source_list.HELP)
    run.add_argument("--events", type=Path, help="append events to this JSONL file")
    add_runtime_arguments(run)
    run.add_argument("--pace", choices=("live", "fast"), default="fast",
                     help="files only: 'live' replays at real time and drops frames like a "
                     "camera if processing falls behind; 'fast' processes every frame as fast "
                     "as possible")
    run.add_argument("--engine", choices=("cached", "naive"), default="cached",
                     help="naive: re-encode 32 frames per window (baseline)")
    run.add_argument("--video-out", type=Path, help="write an annotated copy of the video here")
    run.add_argument("--plot", type=Path, help="write a timeline PNG of per-frame scores here")
    run.add_argument("--truth", type=Path,
                     help="ground-truth JSON (intervals in source frames) to compare")
    run.add_argument("--profile", metavar="NAME",
                     help="per-person neutral profile: adapt the thresholds to NAME's resting "
                     "face (with --calibrate: record it first and save it as NAME)")
    run.add_argument("--calibrate", action="store_true",
                     help="start with a neutral-baseline phase (keep a neutral face) and spot "
                     "with the thresholds it implies")
    run.add_argument("--calibrate-s", type=float_range(0.0, lo_open=True), default=3.0,
                     help="length of the neutral-baseline phase (seconds with a face)")
    run.add_argument("--calibration-timeout-s", type=float_range(0.0, lo_open=True),
                     default=20.0,
                     help="fail the baseline phase if it is not done after this long")
    run.add_argument("--profiles-dir", type=Path,
                     help="where profiles live (default ~/.config/fesnet/profiles)")
    run.add_argument("--quiet", action="store_true", help="no per-event console lines")
    add_cluster_arguments(run)
    viewer_commands.register(sub)
    add_local_cluster_arguments(sub.add_parser(
        "cluster", help="a Ray cluster on this machine, loopback only (then --cluster ray://...)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    ))
    return parser


def _load_runtime(args: argparse.Namespace, placement: Any = None) -> Any:
    """The model, loaded as every program loads it (its network where ``placement`` puts it:
    Ray with ``--cluster``); ``--profile NAME`` without ``--calibrate`` moves the thresholds to
    NAME's saved profile."""
    from fesnet.model.runtime import LoadError, load_runtime, runtime_config

    profile = None
    if args.profile is not None and not args.calibrate:
        # The CLI is an entry point: it may compose calibration/ (the realtime library does not).
        from fesnet.calibration.profile import ProfileError, load_profile

        try:
            profile = load_profile(args.profile, args.profiles_dir)
        except ProfileError as e:
            raise UsageError(str(e)) from e
    try:
        runtime = load_runtime(runtime_config(args), profile, placement)
    except LoadError as e:
        raise UsageError(str(e)) from e
    if profile is not None:
        cfg, base = runtime.merger, runtime.base_merger
        print(f"profile {profile.name!r}: thresholds on {cfg.on_threshold:.3f} / off "
              f"{cfg.off_threshold:.3f} (base {base.on_threshold:.3f} / "
              f"{base.off_threshold:.3f})")
    return runtime


def _calibration(args: argparse.Namespace, runtime: Any, source: Any) -> Any:
    """``--calibrate``: the stream starts with a neutral-baseline phase (saved as ``--profile``
    NAME if given); returns the phase factory. The relative rule applies when the checkpoint
    has a neutral reference."""
    from fesnet.calibration.baseline import BaselineConfig, calibration_phase
    from fesnet.calibration.profile import (
        ProfileError,
        ThresholdRule,
        check_name,
        checkpoint_rule,
        save_profile,
    )

    try:
        rule = checkpoint_rule(runtime.checkpoint.meta) or ThresholdRule()
        phase = BaselineConfig(args.calibrate_s, args.calibration_timeout_s, rule)
        if args.profile is not None:
            check_name(args.profile)
    except (ProfileError, ValueError) as e:
        raise UsageError(str(e)) from e

    def save(profile: Any) -> None:
        if args.profile is not None:
            print(f"profile {profile.name!r} saved to {save_profile(profile, args.profiles_dir)}")

    print(f"calibrating first: keep a neutral face for {args.calibrate_s:g} s")
    return calibration_phase(phase, args.profile or "session", save, source.describe())


def cmd_run(args: argparse.Namespace) -> int:
    """One source, several, or ``--cluster``: the same sinks, stop rules, summary and exit
    codes; only where the streams run differs."""
    from .cluster.config import cluster_config
    from .cluster.run import check_args, source_specs
    from .reporting import read_truth
    from .sinks import JsonlSink

    try:
        specs = source_specs(args)
        cluster = cluster_config(args)
    except (ValueError, ClusterError) as e:
        raise UsageError(str(e)) from e
    truth_path = args.truth
    if not specs:
        if not SAMPLE_CLIP.is_file():
            raise UsageError(f"no --source given and the sample clip {SAMPLE_CLIP} is missing")
        specs = [str(SAMPLE_CLIP)]
        truth_path = truth_path or (SAMPLE_TRUTH if SAMPLE_TRUTH.is_file() else None)
        print(f"no --source: running on the bundled sample clip {SAMPLE_CLIP.name} "
              "(use --source webcam:0 for a camera)")
    try:
        if len(specs) > 1 or cluster is not None:
            check_args(args, specs)
        truth = read_truth(truth_path) if truth_path is not None else None
        # Outputs first: a path that cannot be written is found before the model loads.
        if args.video_out is not None:
            AnnotatedVideo.check(args.video_out)
        if args.plot is not None:
            check_plot_path(args.plot)
        jsonl = JsonlSink(args.events) if args.events else None
    except (ValueError, OutputError) as e:
        raise UsageError(str(e)) from e
    try:
        return _spot(args, specs, cluster, truth, jsonl)
    finally:
        if jsonl is not None:
            jsonl.close()


def _spot(args: argparse.Namespace, specs: list[str], cluster: Any, truth: Any, jsonl: Any) -> int:
    from .sinks import ConsoleSink, ListSink

    placement = None
    if cluster is not None:
        from .cluster.placement import RayPlacement

        placement = RayPlacement(cluster, streams=len(specs))
    try:
        runtime = _load_runtime(args, placement)  # refuses a --stride longer than a window
        control = RunControl()
        collected = ListSink()
        sinks: list[Any] = [collected]
        if jsonl is not None:
            sinks.append(control.output(jsonl))
        if not args.quiet:
            sinks.append(control.console(ConsoleSink()))
        if placement is not None:
            from .cluster.run import run_on_cluster

            results = run_on_cluster(cluster, placement.tier, runtime, specs, args.pace, sinks,
                                     control)
            extras = _Extras()
        else:
            results, extras = _run_here(args, specs, runtime, sinks, control)
        return _report(args, runtime, results, control, collected, jsonl, truth, extras)
    except ClusterUnavailable as e:  # nothing answers there: a failure, not bad input
        print(f"fesnet-spot: error: {e}", file=sys.stderr)
        return exitcodes.FAILED
    except Exception as e:
        from .sources import SourceError

        if isinstance(e, SourceError | ClusterError):
            raise UsageError(str(e)) from e
        raise
    finally:
        if placement is not None:
            placement.close()


class _Extras:
    """What only a run of one source in this process writes: a timeline plot, an annotated
    video (observers of its spotter) and its source's frame rate."""

    def __init__(self, score_log: Any = None, video: Any = None, fps: float = 30.0) -> None:
        self.score_log, self.video, self.fps = score_log, video, fps


def _run_here(
    args: argparse.Namespace, specs: list[str], runtime: Any, sinks: list[Any], control: Any
) -> tuple[list[Any], _Extras]:
    """The streams in this process, over one engine, until each ends or the run is stopped."""
    from .cluster.streams import stream_names
    from .observers import ScoreLog
    from .reporting import StreamResult
    from .session import StreamModel, open_stream, run_streams
    from .sources import open_source
    from .tier_engine import describe

    single = len(specs) == 1
    names = [None] if single else stream_names(specs)
    sources = []
    try:
        for spec, name in zip(specs, names, strict=True):
            sources.append(open_source(spec, pace=args.pace, **({"stream": name} if name else {})))
    except BaseException:
        for source in sources:
            source.stop()
        raise
    for spec, source in zip(specs, sources, strict=True):
        if source.fps is not None and source.fps < MIN_ME_FPS:
            print(f"warning: {spec} runs at {source.fps:g} fps; below {MIN_ME_FPS:g} fps a "
                  "micro-expression (< 0.5 s) spans only a few frames and a single changed "
                  "frame lasts long enough to be reported: ME events are unreliable",
                  file=sys.stderr)
    extras = _Extras(fps=sources[0].fps or 30.0)
    observers: list[Any] = []
    if single and args.plot is not None:
        extras.score_log = ScoreLog()
        observers.append(extras.score_log)
    stream_sinks = list(sinks)
    if single and args.video_out is not None:
        extras.video = AnnotatedVideo(args.video_out, extras.fps, control.output_failed)
        observers.append(extras.video)
        stream_sinks.append(extras.video.on_event)
    phase = _calibration(args, runtime, sources[0]) if single and args.calibrate else None
    model = StreamModel.of(runtime, args.engine, max_streams=len(sources))
    runs = [open_stream(model, source, stream_sinks, observers=observers, phase=phase)
            for source in sources]
    backend = describe(model.engine)
    if single:
        print(f"spotting {sources[0].describe()} with {backend} (stride "
              f"{runtime.stride_frames}); Ctrl-C stops and closes open intervals")
    else:
        print(f"spotting {len(runs)} streams in this process with {backend}", flush=True)
    for run in runs:
        control.on_stop(run.request_stop)
    try:
        with control.signals():
            errors = run_streams(runs)
    finally:
        if extras.video is not None:
            extras.video.close()
    results = [StreamResult(r.stream, r.summary(), e) for r, e in zip(runs, errors, strict=True)]
    return results, extras


def _report(
    args: argparse.Namespace,
    runtime: Any,
    results: list[Any],
    control: Any,
    collected: Any,
    jsonl: Any,
    truth: Any,
    extras: _Extras,
) -> int:
    """What every run prints when its streams have ended, and its exit code."""
    from .reporting import compare_with_truth, format_comparison, format_summary

    if control.stdout_closed:
        raise BrokenPipeError("stdout closed")
    several = len(results) > 1 or args.cluster is not None
    failed = [r.error for r in results if r.error is not None]
    clean = not failed and control.signum is None and control.output_error is None
    for r in results:
        print(f"\n[{r.stream}]" if several else "")
        if r.summary is not None:
            print(format_summary(r.summary))
            faces = sum(1 for e in collected.of_type("face_found") if e.stream == r.stream)
            for note in explain_quiet_run(r.summary, faces, runtime.window_frames) if clean else ():
                print(f"note        {note}")
    _wire_line(results)
    if jsonl is not None:
        lost = f", {jsonl.lost} not written" if jsonl.lost else ""
        print(f"events      {jsonl.path} ({jsonl.count} written{lost}, run {jsonl.run})")
    _plot(args, runtime, collected, truth, extras, control)
    _video(args, results, extras, control)
    if truth is not None and not failed and not control.stopped_by_output:
        for r in results:
            mine = [e for e in collected.events if e.stream == r.stream]
            print(f"\ncompared with the ground truth (interval F1, IoU >= 0.5)"
                  f"{f' [{r.stream}]' if several else ''}:")
            print(format_comparison(compare_with_truth(mine, truth)))
    for error in failed:
        cause = error.__cause__ or error
        if _bad_input(args, cause):
            raise UsageError(str(cause)) from error
        print(f"fesnet-spot: error: {error}", file=sys.stderr)
    if not failed and control.output_error is not None:
        stopped = "; the run was stopped" if control.stopped_by_output else ""
        print(f"fesnet-spot: error: {control.output_error}{stopped}", file=sys.stderr)
    return control.exit_code(failed[0] if failed else None)


def _bad_input(args: argparse.Namespace, cause: BaseException) -> bool:
    """A stream ended because its input is unusable (a source, a calibration without a face):
    the run is refused as bad input (exit code 2), not reported as a failure."""
    from .sources import SourceError

    bad: tuple[type[BaseException], ...] = (SourceError,)
    if args.calibrate:
        from fesnet.calibration.baseline import CalibrationError

        bad += (CalibrationError,)
    return isinstance(cause, bad)


def _wire_line(results: list[Any]) -> None:
    from .cluster.wire import WireStats

    wire = WireStats()
    for r in results:
        wire.merge(r.wire)
    frames = sum(r.summary["frames"] for r in results if r.summary is not None)
    if wire.total_bytes() and frames:
        print(f"\nwire        {wire.total_bytes() / frames / 1024:.1f} KiB per source frame "
              f"to and from the model tier ({frames} frames)")


def _plot(
    args: argparse.Namespace, runtime: Any, collected: Any, truth: Any, extras: _Extras,
    control: Any,
) -> None:
    from .plots import timeline_png

    if extras.score_log is None:
        return
    pts, scores, _ = extras.score_log.arrays()
    detected = [
        (e.onset_s, e.offset_s, e.label)
        for e in collected.events
        if e.type == "expression" and e.state in ("final", "interrupted")
    ]
    truth_s = None
    if truth is not None:
        fps = extras.fps
        truth_s = [(a / fps, (b + 1) / fps, "ME" if c == 1 else "MaE") for a, b, c in truth]
    try:
        in_force = extras.score_log.merger or runtime.merger
        timeline_png(args.plot, pts, scores, detected, truth_s,
                     on_threshold=in_force.on_threshold)
        print(f"plot        {args.plot}")
    except (OSError, ValueError) as e:
        control.output_error = control.output_error or OutputError(
            f"cannot write the plot {args.plot}: {e}"
        )


def _video(args: argparse.Namespace, results: list[Any], extras: _Extras, control: Any) -> None:
    if extras.video is None:
        return
    written = args.video_out.is_file() and args.video_out.stat().st_size > 0
    if written:
        print(f"video       {args.video_out}")
    elif control.output_error is None and results[0].summary["frames"] > 0:
        control.output_error = OutputError(f"the annotated video {args.video_out} was not "
                                           "written")


def main(argv: list[str] | None = None) -> int:
    """The ``fesnet-spot`` entry point; returns the exit code (realtime/exitcodes.py). Ctrl-C,
    SIGTERM and a closed stdout end it with one line, never a traceback, at any point."""
    from .privacy import disable_telemetry

    disable_telemetry()
    in_main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, exitcodes.raise_stopped) if in_main_thread else None
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("fesnet-spot: interrupted", file=sys.stderr)
        return exitcodes.stopped_by(signal.SIGINT)
    except exitcodes.Stopped as e:
        print(f"fesnet-spot: stopped by signal {e.signum}", file=sys.stderr)
        return exitcodes.stopped_by(e.signum)
    except BrokenPipeError:
        silence_stdout()
        return exitcodes.STDOUT_CLOSED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, old_term)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return exitcodes.BAD_INPUT
    if args.command in viewer_commands.COMMANDS:
        return viewer_commands.run(args)
    if args.command == "cluster":
        from .cluster.local import run as run_local_cluster

        return run_local_cluster(args)
    try:
        return cmd_run(args)
    except UsageError as e:
        print(f"fesnet-spot: error: {e}", file=sys.stderr)
        return exitcodes.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
