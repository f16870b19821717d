"""Soak run of a ``fesnet-spot run`` with several live streams, in this process or on Ray: memory,
threads and file descriptors of every process over time, and the event ledger (one stream:
``realtime/bench/soak.py``, whose clip, model and pairing rule this script shares).

The run is made by the calls the CLI makes: in this process (``--streams N``) ``open_source`` per
source, one ``StreamModel`` (one engine), ``open_stream`` per source and ``run_streams``; with
``--cluster`` a private Ray on 127.0.0.1 (``RayPlacement``, ``--replicas`` model replicas) and
``run_on_cluster``, a stream actor per source. One events file, through ``RunControl`` as the CLI
writes it. The sources are HTTP MJPEG cameras on 127.0.0.1 served by this script, one per
stream: the sample clip at its own 30 FPS on a continuous timeline, the face away for ``--away-s``
every ``--away-every-s`` (a blank frame), so faces, segments and intervals keep opening and
closing. After ``--minutes`` the run is stopped as Ctrl-C stops it (open intervals closed as
``interrupted``).

Recorded (JSON, ``--out``), every ``--sample-s`` after ``--warmup-s``: this process's RSS,
threads and file descriptors, the same for the private Ray's processes by role (model replica,
stream actors, Serve controller, raylet, GCS, agents), lines written so far, and per stream (in
this process) frames processed and dropped. At the end, per stream: frames, faces lost, events
the stream emitted vs lines written (``events_lost`` must be 0; on Ray, what each actor emitted
as its last poll said) and every onset closed exactly once.

    python -m fesnet.realtime.bench.soak_runs --minutes 60 --streams 4 \\
        --out docs/benchmarks/soak-streams-60min.json
    python -m fesnet.realtime.bench.soak_runs --minutes 60 --cluster --streams 2 --replicas 1 \\
        --out docs/benchmarks/soak-cluster-60min.json
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from fesnet.realtime.bench.soak import add_soak_arguments, load_jpegs, load_model, onset_pairing
from fesnet.realtime.reporting import StreamResult
from fesnet.realtime.run_control import RunControl
from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.session import StreamModel, open_stream, run_streams
from fesnet.realtime.sinks import JsonlSink, read_events


class MjpegCameras:
    """HTTP MJPEG cameras on 127.0.0.1 (``url(i)``: camera i): each connection gets the clip at
    ``fps`` on its own continuous timeline, the face away every ``away_every_s`` for ``away_s``
    (a blank frame), until it disconnects or :meth:`close`. Counts the frames sent."""

    def __init__(self, jpegs: list[bytes], blank: bytes, fps: float, away_every_s: float,
                 away_s: float) -> None:
        self.jpegs, self.blank, self.fps = jpegs, blank, fps
        self.away_every_s, self.away_s = away_every_s, away_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.sent = 0
        self._count = threading.Lock()
        threading.Thread(target=self._accept, name="soak-cameras", daemon=True).start()

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/camera{i}.mjpg"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; "
                             b"boundary=frame\r\n\r\n")
                t0, k = time.monotonic(), 0
                while not self.stop.is_set():
                    t_s = k / self.fps
                    away = self.away_every_s > 0 and (
                        t_s % self.away_every_s >= self.away_every_s - self.away_s)
                    jpeg = self.blank if away else self.jpegs[k % len(self.jpegs)]
                    conn.sendall(part % len(jpeg) + jpeg + b"\r\n")
                    with self._count:
                        self.sent += 1
                    k += 1
                    self.stop.wait(max(0.0, t0 + k / self.fps - time.monotonic()))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.server.close()


def _role(p: psutil.Process) -> str:
    """What a Ray process of the run is, from its command line."""
    try:
        cmd = " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return "gone"
    for role, marks in (("replica", ("ServeReplica",)), ("stream actor", ("StreamWorker",)),
                        ("serve controller", ("ServeController",)), ("raylet", ("raylet",)),
                        ("gcs", ("gcs_server",)), ("agents", ("Agent", "agent"))):
        if any(m in cmd for m in marks):
            return role
    return "other"


def sample_processes(proc: psutil.Process) -> dict[str, Any]:
    """This process (RSS in MB, threads, file descriptors) and its descendants (the private
    Ray's processes) by role, each summed."""
    out: dict[str, Any] = {"rss_mb": round(proc.memory_info().rss / 2**20, 1),
                           "threads": proc.num_threads(), "fds": proc.num_fds()}
    roles: dict[str, dict[str, float]] = {}
    for child in proc.children(recursive=True):
        try:
            row = roles.setdefault(_role(child), {"n": 0, "rss_mb": 0.0, "threads": 0, "fds": 0})
            row["rss_mb"] = round(row["rss_mb"] + child.memory_info().rss / 2**20, 1)
            row["threads"] += child.num_threads()
            row["fds"] += child.num_fds()
            row["n"] += 1
        except psutil.Error:
            continue
    if roles:
        out["ray"] = roles
    return out


def soak_runs(args: argparse.Namespace) -> int:
    """``fesnet-spot run`` with ``--streams`` live sources, in this process or (``--cluster``)
    in stream actors on a private Ray (module docstring)."""
    from fesnet.realtime.cluster.streams import stream_names
    from fesnet.realtime.sources import open_source

    size = (args.width, args.height)
    jpegs, clip_fps = load_jpegs(SAMPLE_CLIP, size)
    blank = cv2.imencode(".jpg", np.full((size[1], size[0], 3), 90, np.uint8))[1].tobytes()
    cameras = MjpegCameras(jpegs, blank, clip_fps, args.away_every_s, args.away_s)
    urls = [cameras.url(i) for i in range(args.streams)]
    events_path = args.events or Path(tempfile.mkdtemp(prefix="soak-")) / "events.jsonl"
    events_path.unlink(missing_ok=True)
    jsonl, control = JsonlSink(events_path), RunControl()
    sinks = [control.output(jsonl)]
    placement = cfg = None
    if args.cluster:
        from fesnet.realtime.cluster.config import ClusterConfig
        from fesnet.realtime.cluster.placement import RayPlacement

        cfg = ClusterConfig(replicas=args.replicas, local_cpus=args.streams + args.replicas)
        placement = RayPlacement(cfg, streams=args.streams)
    proc, samples, t_start = psutil.Process(), [], time.monotonic()
    try:
        runtime, kind = load_model(args.checkpoint, args.threads, args.backend, placement)
        where = f"on a private Ray, {args.replicas} replica(s)" if args.cluster else "here"
        print(f"soak: {args.minutes:g} min, {args.streams} MJPEG cameras at {clip_fps:g} FPS "
              f"({size[0]}x{size[1]}) spotted {where}; model: {kind}", flush=True)
        runs: list[Any] = []
        if not args.cluster:
            model = StreamModel.of(runtime)
            runs = [open_stream(model, open_source(url, stream=name), sinks)
                    for url, name in zip(urls, stream_names(urls), strict=True)]
            for r in runs:
                control.on_stop(r.request_stop)
        sampler = threading.Thread(target=_sample_until_stopped, daemon=True,
                                   args=(args, control, proc, runs, jsonl, samples))
        t_start = time.monotonic()
        sampler.start()
        if args.cluster:
            from fesnet.realtime.cluster.run import run_on_cluster

            results = run_on_cluster(cfg, placement.tier, runtime, urls, "live", sinks, control)
        else:
            with control.signals():
                errors = run_streams(runs)
            results = [StreamResult(r.stream, r.summary(), e)
                       for r, e in zip(runs, errors, strict=True)]
        control.stop()
        sampler.join(30)
    finally:
        cameras.close()
        jsonl.close()
        if placement is not None:
            placement.close()
    return _report_runs(args, kind, results, events_path, samples, t_start, cameras)


def _sample_until_stopped(
    args: argparse.Namespace, control: RunControl, proc: psutil.Process, runs: list[Any],
    jsonl: JsonlSink, samples: list[dict[str, Any]],
) -> None:
    """Every ``--sample-s`` after the warm-up: the processes and what the run did so far; stops
    the run after ``--minutes``."""
    t_start, duration_s = time.monotonic(), args.minutes * 60.0
    next_sample = t_start + min(args.warmup_s, duration_s)
    while not control.stopping:
        if time.monotonic() - t_start >= duration_s:
            control.stop()
            return
        time.sleep(max(0.0, min(1.0, next_sample - time.monotonic())))
        if time.monotonic() < next_sample:
            continue
        next_sample += args.sample_s
        s = {"t_s": round(time.monotonic() - t_start, 1), **sample_processes(proc),
             "events_written": jsonl.count}
        if runs:
            status = [r.status() for r in runs]
            s["processed"] = [st["frames"] for st in status]
            s["dropped"] = [st["dropped"] for st in status]
        samples.append(s)
        print(json.dumps(s), flush=True)


def _report_runs(
    args: argparse.Namespace, kind: str, results: list[StreamResult], events_path: Path,
    samples: list[dict[str, Any]], t_start: float, cameras: MjpegCameras,
) -> int:
    written = read_events(events_path)
    streams = []
    for r in results:
        mine = [e for e in written if e["stream"] == r.stream]
        summary = r.summary or {}
        onsets, unpaired = onset_pairing(mine)
        streams.append({
            "stream": r.stream, "error": None if r.error is None else str(r.error),
            "frames_read": summary.get("frames_read"), "frames": summary.get("frames"),
            "dropped": summary.get("dropped"), "faces_lost": summary.get("faces_lost"),
            "segments": summary.get("segments"), "events_emitted": summary.get("events"),
            "events_written": len(mine), "sink_errors": summary.get("sink_errors"),
            "expression_onsets": onsets, "onsets_unpaired": unpaired,
        })
    emitted = sum(s["events_emitted"] or 0 for s in streams)

    def series(key: str, role: str | None = None) -> list[float]:
        if role is None:
            return [s[key] for s in samples]
        return [s["ray"][role][key] for s in samples if role in s.get("ray", {})]

    def span(values: list[float]) -> dict[str, float] | None:
        return {"start": values[0], "end": values[-1], "min": min(values),
                "max": max(values)} if values else None

    roles = sorted({r for s in samples for r in s.get("ray", {})})
    result = {
        "mode": f"cluster ({args.replicas} replica(s))" if args.cluster else "in process",
        "minutes": round((time.monotonic() - t_start) / 60.0, 2),
        "streams": args.streams, "camera_fps": cameras.fps,
        "frame_size": [args.width, args.height], "model": kind, "frames_sent": cameras.sent,
        "this_process": {k: span(series(k)) for k in ("rss_mb", "threads", "fds")},
        "ray_processes": {role: {k: span(series(k, role)) for k in ("n", "rss_mb", "threads",
                                                                     "fds")}
                          for role in roles},
        "events_emitted": emitted, "events_written": len(written),
        "events_lost": emitted - len(written), "per_stream": streams, "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    ok = result["events_lost"] == 0 and all(
        s["onsets_unpaired"] == 0 and s["error"] is None and not s["sink_errors"] for s in streams)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--streams", type=int, default=4, help="live sources of the run")
    p.add_argument("--cluster", action="store_true",
                   help="each stream in an actor on a private Ray (--cluster auto)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas with --cluster")
    add_soak_arguments(p)
    p.add_argument("--out", type=Path, default=Path("docs") / "benchmarks" / "soak-runs.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return soak_runs(args)


if __name__ == "__main__":
    raise SystemExit(main())
