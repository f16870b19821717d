"""End-to-end benchmarks: the streaming pipeline on a clip, 1..N concurrent streams sharing one
backend, with per-stage timings, latencies and the per-frame cost of a 60 FPS camera."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from ..stats import STAGES
from .backends import build_timed_backend, set_torch_threads
from .config import BenchConfig
from .timing import face_crops, percentiles_ms

log = logging.getLogger(__name__)


def run_end_to_end(config: BenchConfig, report: dict[str, Any], ck: Any) -> None:
    """The streaming pipeline (realtime/pipeline.py) on ``--video``, 1..N concurrent streams."""
    if config.video is None:
        report["end_to_end"] = {"skipped": "no --video given"}
        return
    threads = min(config.threads)
    set_torch_threads(threads)
    crops = face_crops(ck.config.window_frames, ck.config.image_size)
    names = config.e2e_backends or [b for b in ("onnx", "torch") if b in config.backends][:1]
    runs = []
    for name in names:
        backend, _ = build_timed_backend(name, ck, config, threads, crops)
        for n in config.streams:
            log.info("end to end: %s, %d stream(s), pace %s", name, n, config.pace)
            res = pipeline_run(
                backend, ck, config.video, n, config.pace, config.stride_frames, config.e2e_align
            )
            runs.append({"backend": name, "threads": threads, "align": config.e2e_align, **res})
    report["end_to_end"] = runs


def camera_60fps_ms_per_frame(
    stages: dict[str, dict[str, float]], stride_frames: int, cores: int | None = None
) -> tuple[float, float]:
    """Per-frame cost of one 60 FPS camera (every slot a distinct frame) from the stage medians:
    (pipelined, serial). The source, align and infer threads overlap, so a frame costs the
    slowest thread's share, but never less than the total work spread over the cores."""
    med = {k: stages.get(k, {}).get("p50_ms", 0.0) for k in STAGES}
    per_window = (med["window"] + med["merge"]) / stride_frames
    infer = med["encode"] + med["geometry"] + per_window + med["emit"]
    serial = med["decode"] + med["align"] + infer
    cores = cores or os.cpu_count() or 1
    return max(med["decode"], med["align"], infer, serial / cores), serial


def pipeline_run(
    backend: Any,
    ck: Any,
    video: str,
    n_streams: int,
    pace: str,
    stride_frames: int,
    align: str = "periodic",
) -> dict[str, Any]:
    """``n_streams`` pipelines on the same clip at once, sharing one backend (and the CPU).

    Latency ("frame_score": capture of a window's newest frame -> its scores; "event": capture of
    the triggering frame -> event emitted) is only meaningful with ``pace="live"``: read as fast
    as possible, frames wait in the source's queue before they are processed. ``align`` names
    the trackers' aligner (``fesnet.realtime.bench.config.ALIGN_MODES``).
    """
    from fesnet.model.runtime import merger_config

    from ..session import StreamModel, open_stream, run_streams
    from ..sources import FileSource
    from ..stats import StageStats
    from ..tracking import FaceTracker
    from .align import make_aligner

    model = StreamModel.over(backend, merger_config(ck), stride_frames)
    aligner_factory = make_aligner(align)
    # Every sample kept (a clip is finite): the percentiles below are exact, over the whole
    # clip, not over a live stream's bounded recent history.
    timings = [StageStats(keep_recent=None) for _ in range(n_streams)]
    runs = [
        open_stream(model, FileSource(video, pace=pace, stream=f"s{i}"),
                    tracker=FaceTracker(make_aligner=aligner_factory), stats=timings[i])
        for i in range(n_streams)
    ]
    t0 = time.perf_counter()
    for error in run_streams(runs, poll_s=0.5):
        if error is not None:
            raise error
    wall_s = time.perf_counter() - t0
    summaries = [r.summary() for r in runs]

    def merged(stage: str) -> dict[str, float]:
        return percentiles_ms(np.concatenate([t.values_ms(stage) for t in timings]) / 1e3)

    frames = sum(s["frames"] for s in summaries)
    src_fps = runs[0].source.fps
    stages = {st: merged(st) for st in STAGES}
    per_frame_ms, serial_ms = camera_60fps_ms_per_frame(stages, stride_frames)
    return {
        "streams": n_streams,
        "pace": pace,
        "video": str(video),
        "source_fps": src_fps,
        "wall_s": round(wall_s, 3),
        "frames": frames,
        "frames_read": sum(s["frames_read"] for s in summaries),
        "dropped": sum(s["dropped"] for s in summaries),
        "windows": sum(s["windows"] for s in summaries),
        "events": sum(s["events"] for s in summaries),
        "faces_lost": sum(s["faces_lost"] for s in summaries),
        "sustained_frames_per_s": round(frames / wall_s, 2),
        "per_stream_frames_per_s": [round(s["fps"], 2) for s in summaries],
        "realtime_factor_source": (
            round(frames / wall_s / n_streams / src_fps, 3) if src_fps else None
        ),
        "est_60fps_camera_ms_per_frame": round(per_frame_ms, 3),
        "est_60fps_serial_ms_per_frame": round(serial_ms, 3),
        "est_60fps_realtime_factor": round(1000.0 / per_frame_ms / 60.0, 3)
        if per_frame_ms > 0
        else None,
        "stages": stages,
        "latency": {"frame_score": merged("frame_score_latency"), "event": merged("event_latency")},
    }


def pipeline_vs_flow(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Whole-pipeline comparison per frame of a 60 FPS camera: both pipelines decode and align
    the same way (measured stage medians); ours then encodes + 1/stride of a window head, theirs
    computes flow + strain (and would still run a CNN, not counted: theirs is a lower bound)."""
    e2e = report.get("end_to_end")
    if not isinstance(e2e, list):
        return []
    out = []
    for r in e2e:
        if r["streams"] != 1:
            continue
        front_ms = sum(r["stages"][s].get("p50_ms", 0.0) for s in ("decode", "align"))
        ours_ms = r["est_60fps_camera_ms_per_frame"]
        for f in report.get("optical_flow", []):
            flow_ms = front_ms + f["per_frame"]["p50_ms"]
            out.append(
                {
                    "backend": r["backend"],
                    "flow": f["method"],
                    "ours_ms_per_frame": round(ours_ms, 3),
                    "flow_pipeline_ms_per_frame_lower_bound": round(flow_ms, 3),
                    "ours_frames_per_s": round(1000.0 / ours_ms, 2),
                    "flow_pipeline_frames_per_s_upper_bound": round(1000.0 / flow_ms, 2),
                    "speedup": round(flow_ms / ours_ms, 3),
                }
            )
    return out
