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
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fesnet.model.options import float_range
from fesnet.model.runtime import add_runtime_arguments

from . import exitcodes
from .cluster.config import ClusterError, add_cluster_arguments
from .cluster.local import add_arguments as add_local_cluster_arguments
from .observers import Observer
from .outputs import OutputError, check_plot_path, check_writable
from .run_control import RunControl, explain_quiet_run, silence_stdout
from .tracking import TrackResult
from .types import Frame
from .viewers import commands as viewer_commands

ASSETS = Path(__file__).resolve().parent / "assets"
SAMPLE_CLIP = ASSETS / "sample.mp4"
SAMPLE_TRUTH = ASSETS / "sample_truth.json"
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
    )  # fmt: skip
    run.add_argument("--sources", type=Path,
                     help="a file with one source per line (several streams)")  # fmt: skip
    run.add_argument("--events", type=Path, help="append events to this JSONL file")
    add_runtime_arguments(run)
    run.add_argument("--pace", choices=("live", "fast"), default="fast",
                     help="files only: 'live' replays at real time and drops frames like a "
                     "camera if processing falls behind; 'fast' processes every frame as fast "
                     "as possible")  # fmt: skip
    run.add_argument("--engine", choices=("cached", "naive"), default="cached",
                     help="naive: re-encode 32 frames per window (baseline)")  # fmt: skip
    run.add_argument("--video-out", type=Path, help="write an annotated copy of the video here")
    run.add_argument("--plot", type=Path, help="write a timeline PNG of per-frame scores here")
    run.add_argument("--truth", type=Path,
                     help="ground-truth JSON (intervals in source frames) to compare")  # fmt: skip
    run.add_argument("--profile", metavar="NAME",
                     help="per-person neutral profile: adapt the thresholds to NAME's resting "
                     "face (with --calibrate: record it first and save it as NAME)")  # fmt: skip
    run.add_argument("--calibrate", action="store_true",
                     help="start with a neutral-baseline phase (keep a neutral face) and spot "
                     "with the thresholds it implies")  # fmt: skip
    run.add_argument("--calibrate-s", type=float_range(0.0, lo_open=True), default=3.0,
                     help="length of the neutral-baseline phase (seconds with a face)")
    run.add_argument("--calibration-timeout-s", type=float_range(0.0, lo_open=True),
                     default=20.0,
                     help="fail the baseline phase if it is not done after this long")  # fmt: skip
    run.add_argument("--profiles-dir", type=Path,
                     help="where profiles live (default ~/.config/fesnet/profiles)")  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="no per-event console lines")
    add_cluster_arguments(run)
    viewer_commands.register(sub)
    add_local_cluster_arguments(sub.add_parser(
        "cluster", help="a Ray cluster on this machine, loopback only (then --cluster ray://...)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    ))  # fmt: skip
    return parser


def _load_runtime(args: argparse.Namespace) -> Any:
    """The model, loaded as every program loads it; ``--profile NAME`` without ``--calibrate``
    moves the thresholds to NAME's saved profile."""
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
        runtime = load_runtime(runtime_config(args), profile)
    except LoadError as e:
        raise UsageError(str(e)) from e
    if profile is not None:
        cfg, base = runtime.merger, runtime.base_merger
        print(f"profile {profile.name!r}: thresholds on {cfg.on_threshold:.3f} / off "
              f"{cfg.off_threshold:.3f} (base {base.on_threshold:.3f} / "
              f"{base.off_threshold:.3f})")  # fmt: skip
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


def _read_truth(path: Path) -> list[tuple[int, int, int]]:
    try:
        doc = json.loads(path.read_text())
        return [(int(iv["onset"]), int(iv["offset"]), int(iv["label"])) for iv in doc["intervals"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot read ground truth {path}: {e}") from e


def compare_with_truth(events: list[Any], truth: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Per-class interval F1 (IoU >= 0.5) of final events against truth (source frames)."""
    from fesnet.model.metrics import match_intervals, spotting_f1

    pred = [
        (e.onset_frame, e.offset_frame, 1 if e.label == "ME" else 2)
        for e in events
        if e.type == "expression" and e.state in ("final", "interrupted")
    ]
    return spotting_f1([match_intervals(pred, truth)])


def format_comparison(counts: dict[str, Any]) -> str:
    lines = [f"{'class':<8}{'TP':>4}{'FP':>4}{'FN':>4}{'P':>7}{'R':>7}{'F1':>7}"]
    for name in ("ME", "MaE", "overall"):
        c = counts[name]
        lines.append(
            f"{name:<8}{c.tp:>4}{c.fp:>4}{c.fn:>4}{c.precision:>7.2f}{c.recall:>7.2f}{c.f1:>7.2f}"
        )
    return "\n".join(lines)


class AnnotatedVideo(Observer):
    """Writes each processed frame with its tracking state, its aligned crop and the expression
    currently open (an observer of the spotter; ``on_event`` is its event sink). A video that
    cannot be written is reported once to ``on_error`` (raised without one) and not retried."""

    def __init__(
        self, path: Path, fps: float, on_error: Callable[[OutputError], None] | None = None
    ) -> None:
        self.path, self.fps = path, fps
        self.on_error = on_error
        self._writer: Any = None
        self.active: str | None = None
        self.failed = False

    def on_event(self, event: Any) -> None:
        if event.type == "expression":
            self.active = event.label if event.state == "onset" else None

    def on_frame(self, frame: Frame, track: TrackResult) -> None:
        import cv2

        if self.failed:
            return
        img = frame.image.copy()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = img.shape[:2]
            self._writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                self.failed = True
                error = OutputError(f"cannot write the annotated video {self.path}")
                if self.on_error is None:
                    raise error
                self.on_error(error)
                return
        cv2.putText(img, f"{frame.pts_s:6.2f}s  {track.state}", (10, 24),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)  # fmt: skip
        if self.active:
            cv2.putText(img, self.active, (10, 56), cv2.FONT_HERSHEY_SIMPLEX, 1.0,
                        (0, 165, 255) if self.active == "ME" else (255, 128, 0), 3)  # fmt: skip
        if track.crop is not None:
            crop = track.crop[:, :, ::-1]
            ch, cw = crop.shape[:2]
            if img.shape[0] >= ch and img.shape[1] >= cw:
                img[-ch:, -cw:] = crop
        self._writer.write(img)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()

    @staticmethod
    def check(path: Path) -> None:
        """OutputError unless a video can be written at ``path`` (folder writable, and the
        container the extension names can take an mp4v stream). Leaves nothing behind."""
        import cv2

        check_writable(path, "annotated video")
        existed = path.exists()
        probe = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 64))
        ok = probe.isOpened()
        probe.release()
        if not existed:
            path.unlink(missing_ok=True)
        if not ok:
            raise OutputError(
                f"cannot write the annotated video {path}: OpenCV cannot write an mp4v video "
                f"to a {path.suffix or 'file without an extension'} (use .mp4)"
            )


def _pct(summary: dict[str, Any], stage: str, key: str) -> str:
    s = summary["stages"].get(stage)
    return f"{s[key]:.1f} ms" if s else "n/a"


def format_summary(summary: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"source      {summary['source']}",
            f"frames      {summary['frames']} processed, {summary['dropped']} dropped, "
            f"{summary['fps']:.1f} frames/s over {summary['wall_s']:.1f} s",
            f"slots       {summary['slots']} at 60 Hz, {summary['encoded']} encoded, "
            f"{summary['windows']} windows",
            f"faces lost  {summary['faces_lost']}",
            f"expressions {summary['expressions_final']} final"
            + (" (stopped early: open intervals interrupted)" if summary["interrupted"] else ""),
            "latency     capture -> frame scores p50 "
            f"{_pct(summary, 'frame_score_latency', 'p50_ms')}, p99 "
            f"{_pct(summary, 'frame_score_latency', 'p99_ms')}; capture -> event p50 "
            f"{_pct(summary, 'event_latency', 'p50_ms')}, p99 "
            f"{_pct(summary, 'event_latency', 'p99_ms')}",
        ]
    )


def cmd_run(args: argparse.Namespace) -> int:
    from .events import JsonlSink

    truth_path = args.truth
    specs = _run_many(args)
    if isinstance(specs, int):
        return specs
    spec = specs[0] if specs else None
    if spec is None:
        if not SAMPLE_CLIP.is_file():
            raise UsageError(f"no --source given and the sample clip {SAMPLE_CLIP} is missing")
        spec = str(SAMPLE_CLIP)
        truth_path = truth_path or (SAMPLE_TRUTH if SAMPLE_TRUTH.is_file() else None)
        print(f"no --source: running on the bundled sample clip {SAMPLE_CLIP.name} "
              "(use --source webcam:0 for a camera)")  # fmt: skip
    truth = _read_truth(truth_path) if truth_path is not None else None
    # Outputs first: a path that cannot be written is found before the model loads.
    try:
        if args.video_out is not None:
            AnnotatedVideo.check(args.video_out)
        if args.plot is not None:
            check_plot_path(args.plot)
        jsonl = JsonlSink(args.events) if args.events else None
    except OutputError as e:
        raise UsageError(str(e)) from e
    try:
        return _spot(args, spec, truth, jsonl)
    finally:
        if jsonl is not None:
            jsonl.close()


def _spot(args: argparse.Namespace, spec: str, truth: Any, jsonl: Any) -> int:
    from .events import ConsoleSink, ListSink
    from .observers import ScoreLog
    from .plots import timeline_png
    from .session import StreamModel, open_stream, run_streams
    from .sources import SourceError, open_source

    runtime = _load_runtime(args)  # refuses a --stride longer than the model's window
    try:
        source = open_source(spec, pace=args.pace)
    except SourceError as e:
        raise UsageError(str(e)) from e
    if source.fps is not None and source.fps < MIN_ME_FPS:
        print(f"warning: {spec} runs at {source.fps:g} fps; below {MIN_ME_FPS:g} fps a "
              "micro-expression (< 0.5 s) spans only a few frames and a single changed frame "
              "lasts long enough to be reported: ME events are unreliable",
              file=sys.stderr)  # fmt: skip

    control = RunControl()
    collected = ListSink()
    sinks: list[Any] = [collected]
    if jsonl is not None:
        sinks.append(control.output(jsonl))
    if not args.quiet:
        sinks.append(control.console(ConsoleSink()))
    observers: list[Any] = []
    score_log = ScoreLog() if args.plot is not None else None
    if score_log is not None:
        observers.append(score_log)
    video = None
    if args.video_out is not None:
        video = AnnotatedVideo(args.video_out, source.fps or 30.0, control.output_failed)
        observers.append(video)
        sinks.append(video.on_event)
    phase = _calibration(args, runtime, source) if args.calibrate else None
    pipe = control.pipe = open_stream(StreamModel.of(runtime, args.engine), source, sinks,
                                      observers=observers, phase=phase)  # fmt: skip
    print(f"spotting {source.describe()} with {getattr(runtime.backend, 'name', args.backend)} "
          f"(stride {runtime.stride_frames}); Ctrl-C stops and closes open intervals")  # fmt: skip

    old = {s: signal.signal(s, control.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        (failed,) = run_streams([pipe])
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if video is not None:
            video.close()
    if control.stdout_closed:
        raise BrokenPipeError("stdout closed")
    summary = pipe.summary()
    print("\n" + format_summary(summary))
    if jsonl is not None:
        lost = f", {jsonl.lost} not written" if jsonl.lost else ""
        print(f"events      {jsonl.path} ({jsonl.count} written{lost})")
    if failed is None and control.signum is None and control.output_error is None:
        faces_found = len(collected.of_type("face_found"))
        for note in explain_quiet_run(summary, faces_found, runtime.window_frames):
            print(f"note        {note}")
    if score_log is not None:
        pts, scores, _ = score_log.arrays()
        detected = [
            (e.onset_s, e.offset_s, e.label)
            for e in collected.events
            if e.type == "expression" and e.state in ("final", "interrupted")
        ]
        truth_s = None
        if truth is not None:
            fps = source.fps or 30.0
            truth_s = [(a / fps, (b + 1) / fps, "ME" if c == 1 else "MaE") for a, b, c in truth]
        try:
            in_force = score_log.merger or runtime.merger
            timeline_png(args.plot, pts, scores, detected, truth_s,
                         on_threshold=in_force.on_threshold)  # fmt: skip
            print(f"plot        {args.plot}")
        except (OSError, ValueError) as e:
            control.output_error = control.output_error or OutputError(
                f"cannot write the plot {args.plot}: {e}"
            )
    if video is not None:
        written = args.video_out.is_file() and args.video_out.stat().st_size > 0
        if written:
            print(f"video       {args.video_out}")
        elif control.output_error is None and summary["frames"] > 0:
            control.output_error = OutputError(f"the annotated video {args.video_out} was not "
                                               "written")  # fmt: skip
    if truth is not None and failed is None and not control.stopped_by_output:
        print("\ncompared with the ground truth (interval F1, IoU >= 0.5):")
        print(format_comparison(compare_with_truth(collected.events, truth)))
    if failed is not None:
        cause = failed.__cause__ or failed
        bad_input: tuple[type[BaseException], ...] = (SourceError,)
        if args.calibrate:
            from fesnet.calibration.baseline import CalibrationError

            bad_input += (CalibrationError,)
        if isinstance(cause, bad_input):
            raise UsageError(str(cause)) from failed
        print(f"fesnet-spot: error: {failed}", file=sys.stderr)
    elif control.output_error is not None:
        stopped = "; the run was stopped" if control.stopped_by_output else ""
        print(f"fesnet-spot: error: {control.output_error}{stopped}", file=sys.stderr)
    return control.exit_code(failed)


def _run_many(args: argparse.Namespace) -> list[str] | int:
    """Several sources or --cluster: run them (cluster/run.py); else the one source or none."""
    from fesnet.model.runtime import LoadError

    from .cluster.run import cmd_run_many, source_specs
    from .sources import SourceError

    try:
        specs = source_specs(args)
        if len(specs) > 1 or args.cluster is not None:
            return cmd_run_many(args, specs or [str(SAMPLE_CLIP)], format_summary)
    except (ValueError, ClusterError, LoadError, SourceError) as e:
        raise UsageError(str(e)) from e
    return specs


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
