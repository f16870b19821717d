"""How long after an expression the spotter tells: per expression, at live pace.

The clip is replayed like a camera (``FileSource(pace="live")``) through the threaded pipeline,
one stream at a time, once per profile (profiles.py), the profiles taking turns for
``lag_repeats`` rounds so that they share the machine's load. Per expression event:

- final lag: capture of the expression's offset frame -> its final event leaving the pipeline;
- onset lag: capture of its onset frame -> its onset event leaving the pipeline.

Beside them, ``frame_score``: capture of a window's newest frame -> its scores (the processing
part of the lag; the rest is how many slots the merger waits, a setting).

Events of the end-of-stream flush are left out (the flush decides at once, which no live stream
does): only expressions whose frames lie more than ``END_MARGIN_S`` before the clip's end count.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from ..observers import Observer
from ..tracking import TrackResult
from ..types import Frame, SpotEvent
from .config import BenchConfig
from .timing import load_avg, percentiles_ms

log = logging.getLogger(__name__)

END_MARGIN_S = 1.0


class ExpressionLag(Observer):
    """Capture time of every consumed frame, and the lags of the expression events emitted."""

    def __init__(self, last_frame: int) -> None:
        self.last_frame = last_frame
        self.captured: dict[int, int] = {}
        self.final: list[float] = []
        self.onset: list[float] = []

    def on_frame(self, frame: Frame, tracked: TrackResult) -> None:
        self.captured[frame.index] = frame.t_capture_ns

    def __call__(self, event: SpotEvent) -> None:
        """The pipeline's sink: called as the event leaves."""
        now = time.monotonic_ns()
        if event.type != "expression" or event.state not in ("final", "onset"):
            return
        frame = event.offset_frame if event.state == "final" else event.onset_frame
        if frame is None or frame > self.last_frame:
            return
        t = self.captured.get(frame)
        if t is not None:
            (self.final if event.state == "final" else self.onset).append((now - t) / 1e9)


def lag_run(backend: Any, ck: Any, video: str, profile: Any) -> dict[str, Any]:
    """One live-paced replay of ``video`` with ``profile``: the lags and what was dropped."""
    import cv2

    from ..session import StreamModel, open_stream
    from ..sources import FileSource
    from ..stats import StageStats
    from ..tracking import FaceTracker
    from .align import make_aligner
    from .profiles import hub_settings

    cap = cv2.VideoCapture(video)
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
    cap.release()
    merger_cfg, stride = hub_settings(ck, profile)
    lags = ExpressionLag(last_frame=n_frames - 1 - int(END_MARGIN_S * fps))
    timings = StageStats(keep_recent=None)  # every window of the clip
    run = open_stream(StreamModel.over(backend, merger_cfg, stride), FileSource(video, pace="live"),
                      [lags], tracker=FaceTracker(make_aligner=make_aligner(profile.align)),
                      observers=[lags], stats=timings)
    run.run(poll_s=0.5)
    summary = run.summary()
    return {
        "final_s": lags.final,
        "onset_s": lags.onset,
        "frame_score_s": list(timings.values_ms("frame_score_latency") / 1e3),
        "frames": summary["frames"],
        "dropped": summary["dropped"],
        "stride_frames": stride,
        "commit_lag_frames": merger_cfg.commit_lag_frames,
    }


def run_lag(config: BenchConfig, report: dict[str, Any], ck: Any, backend: Any) -> None:
    """``report["expression_lag"]``: per profile, final and onset lags over all rounds."""
    video = config.lag_video or config.video
    if not config.lag_repeats or video is None:
        why = "no --lag-repeats" if not config.lag_repeats else "no --video or --lag-video given"
        report["expression_lag"] = {"skipped": why}
        return
    from .profiles import PROFILES

    profiles = [PROFILES[name] for name in config.profiles]
    runs: dict[str, list[dict[str, Any]]] = {p.name: [] for p in profiles}
    load_start = load_avg()
    for r in range(config.lag_repeats):
        for profile in profiles[r % len(profiles) :] + profiles[: r % len(profiles)]:
            log.info("expression lag: %s, round %d, %s at live pace", profile.name, r + 1, video)
            runs[profile.name].append(lag_run(backend, ck, video, profile))
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        final = np.concatenate([r["final_s"] for r in rs]) if rs else np.zeros(0)
        onset = np.concatenate([r["onset_s"] for r in rs]) if rs else np.zeros(0)
        scored = np.concatenate([r["frame_score_s"] for r in rs]) if rs else np.zeros(0)
        out[name] = {
            "final": percentiles_ms(final),
            "onset": percentiles_ms(onset),
            "frame_score": percentiles_ms(scored),
            "frames": sum(r["frames"] for r in rs),
            "dropped": sum(r["dropped"] for r in rs),
            "stride_frames": rs[0]["stride_frames"],
            "commit_lag_frames": rs[0]["commit_lag_frames"],
        }
    report["expression_lag"] = {
        "video": video,
        "rounds": config.lag_repeats,
        "load_avg_1m": [load_start, load_avg()],
        "profiles": out,
    }
