"""How many 30 FPS cameras this machine sustains, in-process and on Ray, in one run.

    python -m fesnet.realtime.bench.cluster --out docs/benchmarks/cluster-2core.json

For each mode (in-process: one process, one shared engine, as ``fesnet-spot run`` with several
sources; Ray with 1 and with 2 model replicas: ``--cluster auto``, a stream actor per camera)
and each stream count N, N copies of a clip are replayed at their own frame rate (30 FPS, as
live cameras: a frame the spotter is not ready for is dropped). A mode *sustains* N streams
when no stream drops more than ``--max-drop`` of its frames and none skips a window (the
spotter's own "falling behind" signal). The report also gives the per-frame cost of the model
calls seen by a stream (encode + window share, p50) and the bytes per source frame that crossed
the wire to and from the model tier. A mode may name how streams reach the model
(``MODE:SERVING``, the loader's ``--serving``): ``ray1:engine`` is the stateless tier whose
windows carry their slots' features, ``ray1`` (``auto``) the tier that keeps them. docs/SCALING.md
holds the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fesnet.realtime.sample_clip import SAMPLE_CLIP


def short_clip(src: Path, seconds: float, out_dir: Path) -> Path:
    """The first ``seconds`` of ``src`` (so a run takes that long at live pace)."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    path = out_dir / f"clip_{seconds:g}s.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(int(seconds * fps)):
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def _stream_row(summary: dict[str, Any]) -> dict[str, Any]:
    st = summary["stages"]
    model_ms = st.get("encode", {}).get("p50_ms", 0.0) * summary["encoded"] / max(
        summary["frames"], 1
    ) + st.get("window", {}).get("p50_ms", 0.0) * summary["windows"] / max(summary["frames"], 1)
    return {
        "frames_read": summary["frames_read"],
        "frames": summary["frames"],
        "dropped": summary["dropped"],
        "windows_skipped": summary["windows_skipped"],
        "model_ms_per_frame": round(model_ms, 3),
        "align_ms_p50": round(st.get("align", {}).get("p50_ms", 0.0), 3),
        "encode_ms_p50": round(st.get("encode", {}).get("p50_ms", 0.0), 3),
        "window_ms_p50": round(st.get("window", {}).get("p50_ms", 0.0), 3),
        "score_latency_p50_ms": round(st.get("frame_score_latency", {}).get("p50_ms", 0.0), 1),
        "score_latency_p95_ms": round(st.get("frame_score_latency", {}).get("p95_ms", 0.0), 1),
    }


def run_in_process(clip: Path, n: int, runtime: Any) -> dict[str, Any]:
    from fesnet.realtime.session import StreamModel, open_stream, run_streams
    from fesnet.realtime.sources import FileSource

    model = StreamModel.of(runtime)
    runs = [open_stream(model, FileSource(clip, pace="live", stream=f"s{i}")) for i in range(n)]
    for error in run_streams(runs, poll_s=0.5):
        if error is not None:
            raise error
    return {"streams": [_stream_row(r.summary()) for r in runs], "wire_bytes": 0}


def run_on_ray(clip: Path, n: int, tier: Any, cfg: Any, runtime: Any) -> dict[str, Any]:
    from ..cluster.streams import drive_actors, spawn
    from ..cluster.wire import WireStats

    actors = {
        f"s{i}": spawn(cfg, tier, str(clip), f"s{i}", runtime.stride_frames, "live",
                       runtime.merger, runtime.serving)
        for i in range(n)
    }
    results = drive_actors(actors, lambda e: None, threading.Event())
    wire = WireStats()
    rows = []
    for res in results:
        if res.error is not None or res.summary is None:
            raise RuntimeError(f"{res.stream}: {res.error}")
        rows.append(_stream_row(res.summary))
        wire.merge(res.wire)
    return {"streams": rows, "wire_bytes": wire.total_bytes(), "wire": wire.snapshot()}


def sustained(run: dict[str, Any], max_drop: float) -> bool:
    return all(
        s["windows_skipped"] == 0 and s["dropped"] <= max_drop * max(s["frames_read"], 1)
        for s in run["streams"]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fesnet.realtime.bench.cluster")
    p.add_argument("--streams", default="1,2,3,4", help="stream counts to try")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length per run")
    p.add_argument("--max-drop", type=float, default=0.01, help="frames a stream may drop")
    p.add_argument("--modes", default="inprocess,ray1,ray2",
                   help="inprocess, rayN (N model replicas), each optionally :engine or :tier")
    p.add_argument("--out", default="cluster-bench.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from fesnet.model.runtime import RuntimeConfig, load_runtime

    from ..cluster.config import ClusterConfig
    from ..cluster.placement import RayPlacement

    counts = [int(x) for x in args.streams.split(",")]
    model = RuntimeConfig(backend="onnx", threads=1)
    report: dict[str, Any] = {
        "command": "python -m fesnet.realtime.bench.cluster "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "settings": vars(args),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        clip = short_clip(SAMPLE_CLIP, args.seconds, Path(tmp))
        for mode in args.modes.split(","):
            tier = cfg = placement = None
            where, _, serving = mode.partition(":")
            load = dataclasses.replace(model, serving=serving or "auto")
            if where.startswith("ray"):
                cfg = ClusterConfig(replicas=int(where[3:]), local_cpus=8)
                placement = RayPlacement(cfg)
                rt = load_runtime(load, placement=placement)
                tier = placement.tier
            else:
                rt = load_runtime(load)
            for n in counts:
                t0 = time.monotonic()
                if tier is None:
                    res = run_in_process(clip, n, rt)
                else:
                    res = run_on_ray(clip, n, tier, cfg, rt)
                frames = sum(s["frames"] for s in res["streams"])
                row = {
                    "mode": mode, "n_streams": n, "wall_s": round(time.monotonic() - t0, 2),
                    "sustained": sustained(res, args.max_drop),
                    "dropped_frac": round(
                        sum(s["dropped"] for s in res["streams"])
                        / max(sum(s["frames_read"] for s in res["streams"]), 1), 4),
                    "model_ms_per_frame_p50": round(float(np.median(
                        [s["model_ms_per_frame"] for s in res["streams"]])), 3),
                    "wire_bytes_per_frame": round(res["wire_bytes"] / max(frames, 1), 1),
                    **res,
                }
                report["runs"].append(row)
                print(f"{mode:<10} {n} streams: sustained={row['sustained']} "
                      f"dropped={row['dropped_frac']:.2%} model={row['model_ms_per_frame_p50']} "
                      f"ms/frame wire={row['wire_bytes_per_frame'] / 1024:.1f} KiB/frame",
                      flush=True)
            if placement is not None:
                placement.close(remove_tier=True)
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    report["max_sustained"] = {
        m: max([r["n_streams"] for r in report["runs"] if r["mode"] == m and r["sustained"]],
               default=0)
        for m in args.modes.split(",")
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["max_sustained"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
