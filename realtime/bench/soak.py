"""Soak run: a live 60 FPS replay through the threaded spotter for a long time, with memory,
threads, file descriptors, drops, latency and event bookkeeping recorded (one stream; several
streams in one run, in this process or on Ray: ``realtime/bench/soak_runs.py``).

A producer thread pushes the bundled real-face sample clip into a :class:`PushSource` at 60 FPS
(the 30 FPS clip, each frame offered at its own time, looped with a continuous timeline), exactly
as a WebRTC track handler pushes camera frames. Every ``--away-every-s`` the face leaves the view
for ``--away-s`` (blank frames), so the run cycles through face found / lost, segment restarts and
interval open/close many times instead of holding one state for half an hour.

Recorded (JSON, ``--out``): RSS every ``--sample-s`` (after a warm-up, the first sample is "start"),
frames pushed / processed / dropped, capture->score latency percentiles per sample, thread count,
and the event ledger: events the pipeline emitted vs lines in the JSONL file (``events_lost`` must
be 0) and whether every expression onset got exactly one final/cancelled/interrupted.

    python -m fesnet.realtime.bench.soak --minutes 30                    # the full soak
    python -m fesnet.realtime.bench.soak --minutes 2 --out /tmp/soak.json  # a smoke run

Without ``--checkpoint`` the shipped model is used if present, else a tiny random network (the
soak is about the pipeline's memory and bookkeeping, not about what the model spots); the merger
thresholds then default low enough that intervals open in every face segment.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from fesnet.model import checkpoint as ckpt_mod
from fesnet.model.runtime import Runtime, RuntimeConfig, load_runtime
from fesnet.realtime.push import PushSource
from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.session import StreamModel, open_stream
from fesnet.realtime.sinks import JsonlSink, read_events
from fesnet.realtime.stats import StageStats


def load_jpegs(path: Path, size: tuple[int, int]) -> tuple[list[bytes], float]:
    """The clip's frames as JPEG bytes (decoded per push, like an MJPEG camera) and its FPS."""
    cap = cv2.VideoCapture(str(path))
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    cap.release()
    if not out:
        raise SystemExit(f"no frames in {path}")
    return out, fps


def load_model(
    path: str | None, threads: int, backend: str = "onnx", placement: Any = None
) -> tuple[Runtime, str]:
    """The checkpoint at ``path`` (default: the shipped one) on ``backend`` (where ``placement``
    puts it: None here, a ``RayPlacement`` on Ray), else a tiny random network whose merger
    thresholds are low enough that intervals open in every face segment."""
    if path is None and not ckpt_mod.DEFAULT_CHECKPOINT.is_file():
        import torch

        from fesnet.model.fesnet import FESNet, FESNetConfig

        torch.manual_seed(0)
        tmp = Path(tempfile.mkdtemp(prefix="soak-ckpt-")) / "tiny.pt"
        merger = {"on_threshold": 0.05, "off_threshold": 0.05}
        path = str(ckpt_mod.save(tmp, FESNet(FESNetConfig.tiny()), {"merger": merger}))
        kind = "tiny random network (no shipped checkpoint)"
    else:
        kind = path or str(ckpt_mod.DEFAULT_CHECKPOINT)
    config = RuntimeConfig(Path(path) if path else None, backend, threads)
    runtime = load_runtime(config, placement=placement)
    return runtime, f"{kind} on {backend}"


class Producer(threading.Thread):
    """Pushes frames at ``fps`` on a continuous timeline until stopped."""

    def __init__(self, source: PushSource, jpegs: list[bytes], clip_fps: float, fps: float,
                 size: tuple[int, int], away_every_s: float, away_s: float) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.source, self.jpegs, self.clip_fps, self.fps = source, jpegs, clip_fps, fps
        self.blank = np.full((size[1], size[0], 3), 90, np.uint8)
        self.away_every_s, self.away_s = away_every_s, away_s
        self.pushed = 0
        self.late = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        k = 0
        while not self.stop_event.is_set():
            t_s = k / self.fps
            cycle = t_s % self.away_every_s if self.away_every_s > 0 else 0.0
            if self.away_every_s > 0 and cycle >= self.away_every_s - self.away_s:
                image = self.blank.copy()
            else:
                i = int(t_s * self.clip_fps) % len(self.jpegs)
                image = cv2.imdecode(np.frombuffer(self.jpegs[i], np.uint8), cv2.IMREAD_COLOR)
            if not self.source.push(image, t_s):
                break
            self.pushed += 1
            k += 1
            delay = t0 + k / self.fps - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                self.late += 1


def onset_pairing(events: list[dict[str, Any]]) -> tuple[int, int]:
    """(onsets, onsets without exactly one final/cancelled/interrupted) per stream."""
    ends: collections.Counter = collections.Counter()
    onsets = []
    for e in events:
        if e.get("type") != "expression":
            continue
        key = (e["stream"], e["event_id"])
        if e["state"] == "onset":
            onsets.append(key)
        else:
            ends[key] += 1
    return len(onsets), sum(1 for k in onsets if ends[k] != 1)


def sample(
    t_s: float, proc: Any, producer: Producer, pipe: Any, source: PushSource, latency: np.ndarray
) -> dict[str, Any]:
    """One row of the soak's record: memory, threads, frame counts, and the latency of the
    frames scored since the last row."""
    return {
        "t_s": round(t_s, 1),
        "rss_mb": round(proc.memory_info().rss / 2**20, 1),
        "threads": proc.num_threads(),
        "fds": proc.num_fds(),
        "pushed": producer.pushed,
        "processed": pipe.status()["frames"],
        "dropped": source.dropped,
        "events": pipe.events_emitted,
        "latency_p50_ms": round(float(np.median(latency)), 1) if len(latency) else None,
        "latency_max_ms": round(float(latency.max()), 1) if len(latency) else None,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--fps", type=float, default=60.0, help="push rate of the replay")
    add_soak_arguments(p)
    p.add_argument("--out", type=Path, default=Path("docs") / "soak_result.json")
    return p


def add_soak_arguments(p: argparse.ArgumentParser) -> None:
    """The model, the camera picture and the sampling of a soak (this one and soak_runs.py)."""
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx",
                   help="inference backend (the CLI's default is ONNX Runtime)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--away-every-s", type=float, default=8.0)
    p.add_argument("--away-s", type=float, default=1.0)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--warmup-s", type=float, default=30.0)
    p.add_argument("--events", type=Path, default=None, help="JSONL path (default: a temp file)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    size = (args.width, args.height)
    jpegs, clip_fps = load_jpegs(SAMPLE_CLIP, size)
    runtime, kind = load_model(args.checkpoint, args.threads, args.backend)
    events_path = args.events or Path(tempfile.mkdtemp(prefix="soak-")) / "events.jsonl"
    events_path.unlink(missing_ok=True)
    jsonl = JsonlSink(events_path)
    source = PushSource(stream="soak")
    timings = StageStats()  # bounded, as in a live session
    pipe = open_stream(StreamModel.of(runtime), source, [jsonl], stats=timings)
    proc = psutil.Process()
    pipe.start()
    if not pipe.wait_ready(120):
        raise SystemExit("pipeline did not start")
    producer = Producer(source, jpegs, clip_fps, args.fps, size, args.away_every_s, args.away_s)
    producer.start()
    t_start = time.monotonic()
    duration_s = args.minutes * 60.0
    samples: list[dict[str, Any]] = []
    next_sample = t_start + min(args.warmup_s, duration_s)
    lat_seen = 0
    stop = threading.Event()  # SIGINT / SIGTERM end the soak early, with its result written
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"soak: {args.minutes:g} min at {args.fps:g} FPS ({size[0]}x{size[1]}), model: {kind}")
    while time.monotonic() - t_start < duration_s and pipe.running and not stop.is_set():
        stop.wait(max(0.0, min(1.0, next_sample - time.monotonic())))
        if time.monotonic() < next_sample:
            continue
        next_sample += args.sample_s
        # The stats keep the recent samples only (bounded): take the ones since the last sample.
        n_lat = timings.count("frame_score_latency")
        lat = timings.values_ms("frame_score_latency")
        new = lat[len(lat) - min(len(lat), n_lat - lat_seen) :]
        lat_seen = n_lat
        s = sample(time.monotonic() - t_start, proc, producer, pipe, source, new)
        samples.append(s)
        print(json.dumps(s), flush=True)
    producer.stop_event.set()
    producer.join(5)
    pipe.stop(60)
    jsonl.close()
    written = read_events(events_path)
    onsets, unpaired = onset_pairing(written)
    summary = pipe.summary()
    rss = [s["rss_mb"] for s in samples] or [round(proc.memory_info().rss / 2**20, 1)]
    result = {
        "minutes": round((time.monotonic() - t_start) / 60.0, 2),
        "push_fps": args.fps,
        "frame_size": list(size),
        "model": kind,
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_max_mb": max(rss),
        "frames_pushed": producer.pushed,
        "frames_processed": summary["frames"],
        "frames_dropped": summary["dropped"],
        "producer_late": producer.late,
        "faces_lost": summary["faces_lost"],
        "segments": summary["segments"],
        "events_emitted": pipe.events_emitted,
        "events_written": len(written),
        "events_lost": pipe.events_emitted - len(written),
        "sink_errors": summary["sink_errors"],
        "expression_onsets": onsets,
        "onsets_unpaired": unpaired,
        "frame_score_latency_ms": summary["stages"].get("frame_score_latency"),
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    ok = result["events_lost"] == 0 and unpaired == 0 and summary["sink_errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
