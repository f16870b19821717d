"""Cameras per box: how many 30 FPS remote cameras one server process keeps up with.

Every level runs a fresh WebRTC server (webrtc_server.py: one engine shared by all camera
sessions, each session with its own tracker, threads, ring and merger) in this process, and N
senders (capacity_sender.py), each in a process of its own, streaming the clip over VP8 on
loopback.
After a warm-up every session is measured for ``seconds``: frames that arrived, frames spotted,
frames dropped at its latest-only slot. A level is *served* when every camera delivered at least
``MIN_DELIVERED`` of the clip's frame rate and its session spotted at least ``MIN_SPOTTED`` of what
arrived: a session that falls behind drops at its slot (it never queues), so drops are the sign.
The setups (fesnet-bench's profiles, resolved by it into :class:`CapacitySetup`) take turns level
by level, so all see the same load. The senders share the cores (their CPU time is reported beside
the server's). Nothing here imports the benchmark package: it hands in what to serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fesnet.model.third_party_logs import loggers_at
from fesnet.realtime.session import StreamModel

log = logging.getLogger(__name__)

MIN_DELIVERED = 0.9
MIN_SPOTTED = 0.97
WARM_UP_S = 4.0
CONNECT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class CapacitySetup:
    """One way of serving cameras that a capacity run measures: its name in the report, the
    model its sessions spot with (engine, merger settings, stride), and what makes each
    session's aligner."""

    name: str
    model: StreamModel
    make_aligner: Callable[[], Any]


def _cpu_s(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _snapshot(sessions: list[Any]) -> list[tuple[int, int, int]]:
    return [(s.input_rate.count, _spotted(s), s.source.dropped) for s in sessions]


def _spotted(session: Any) -> int:
    return int(session.run.status()["frames"])


async def _sessions_running(hub: Any, n: int, procs: list[Any]) -> list[Any]:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        sessions = hub.sessions()
        if len(sessions) == n and all(_spotted(s) > 0 for s in sessions):
            return sessions
        if time.monotonic() > deadline or any(p.returncode is not None for p in procs):
            raise RuntimeError(f"{len(sessions)} of {n} cameras connected and spotting")
        await asyncio.sleep(0.2)


async def serve_level(
    setup: CapacitySetup, n: int, video: str, fps: float, seconds: float,
    machine_load: Callable[[], float | None],
) -> dict[str, Any]:
    """N senders against a fresh server running ``setup``; one row of the report."""
    from unittest import mock

    import aioice.ice
    import psutil

    from ..viewers.webrtc_server import ServerConfig, WebRtcServer
    from .capacity_sender import loopback_ice

    hub = _bench_hub(setup, n)
    server = WebRtcServer(hub, ServerConfig(port=0, max_peers=n))
    with mock.patch.object(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses):
        loopback_ice()
        runner = await server.start()
        url = f"http://127.0.0.1:{server.port}"
        procs = []
        try:
            for _ in range(n):
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "fesnet.realtime.bench.capacity_sender", url, video,
                    "--seconds", str(WARM_UP_S + seconds + 30), "--loopback",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                ))
            sessions = await _sessions_running(hub, n, procs)
            await asyncio.sleep(WARM_UP_S)
            me = psutil.Process()
            senders = [psutil.Process(p.pid) for p in procs]
            before, cpu0, sent0 = _snapshot(sessions), _cpu_s(me), sum(map(_cpu_s, senders))
            t0, peak = time.monotonic(), 0
            while time.monotonic() - t0 < seconds:
                peak = max(peak, *(s.input_rate.count - _spotted(s) - s.source.dropped
                                   for s in sessions))
                await asyncio.sleep(0.1)
            after, wall = _snapshot(sessions), time.monotonic() - t0
            cpu, sent = _cpu_s(me) - cpu0, sum(map(_cpu_s, senders)) - sent0
            latency = [_score_latency(s) for s in sessions]
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
            for p in procs:
                await p.wait()
            await runner.cleanup()
            hub.close_all()
            hub.close_aligners()
    got = np.array([a[0] - b[0] for a, b in zip(after, before, strict=True)], np.float64)
    spotted = np.array([a[1] - b[1] for a, b in zip(after, before, strict=True)], np.float64)
    dropped = np.array([a[2] - b[2] for a, b in zip(after, before, strict=True)], np.float64)
    spotted_share = spotted / np.maximum(got, 1)
    delivered = got / wall / fps
    return {
        "profile": setup.name,
        "cameras": n,
        "seconds": round(wall, 2),
        "received_fps": [round(float(x), 2) for x in got / wall],
        "spotted_fps": [round(float(x), 2) for x in spotted / wall],
        "dropped": [int(x) for x in dropped],
        "spotted_share": [round(float(x), 4) for x in spotted_share],
        "served": bool((delivered >= MIN_DELIVERED).all() and (spotted_share >= MIN_SPOTTED).all()),
        "peak_in_flight": int(peak),
        "server_cpu_cores": round(cpu / wall, 3),
        "server_cpu_cores_per_camera": round(cpu / wall / n, 3),
        "senders_cpu_cores": round(sent / wall, 3),
        "load_avg_1m": machine_load(),
        "score_latency_p50_ms": [x[0] for x in latency],
        "score_latency_p99_ms": [x[1] for x in latency],
    }


def _score_latency(session: Any) -> tuple[float | None, float | None]:
    """A session's capture -> window scores latency (p50, p99 ms) over its whole run so far."""
    st = session.run.summary().get("stages", {}).get("frame_score_latency")
    if not st:
        return None, None
    return round(float(st["p50_ms"]), 1), round(float(st["p99_ms"]), 1)


def _bench_hub(setup: CapacitySetup, n: int) -> Any:
    """A hub whose camera sessions run ``setup`` (its aligner, stride and merger)."""
    from ..viewers.hub import HubConfig, SpotHub

    new_aligner = setup.make_aligner
    made: list[Any] = []

    class BenchHub(SpotHub):
        def open_push(self, prefix: str = "peer", aligner: Any = None) -> Any:
            made.append(new_aligner())
            return super().open_push(prefix, made[-1])

        def close_aligners(self) -> None:
            for a in made:
                a.close()

    return BenchHub(setup.model, HubConfig(max_sessions=n))


def run_capacity(
    setups: Sequence[CapacitySetup],
    levels: Sequence[int],
    video: str,
    seconds: float,
    machine_load: Callable[[], float | None],
) -> dict[str, Any]:
    """Every setup at every level of cameras, taking turns; and per setup the most cameras
    served with every smaller level served too."""
    import cv2

    cap = cv2.VideoCapture(video)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
    cap.release()
    rows = []
    # a line per peer and ICE check otherwise
    with loggers_at(logging.WARNING, "aioice", "aiohttp.access", "fesnet.realtime.viewers"):
        for n in levels:
            for setup in setups:
                log.info("capacity: %s, %d camera(s)", setup.name, n)
                row = asyncio.run(serve_level(setup, n, video, fps, seconds, machine_load))
                log.info("capacity: %s", row)
                rows.append(row)
    served = {}
    for setup in setups:
        best = 0
        own = sorted((r for r in rows if r["profile"] == setup.name), key=lambda r: r["cameras"])
        for r in own:
            if not r["served"]:
                break
            best = r["cameras"]
        served[setup.name] = best
    return {
        "video": video,
        "camera_fps": fps,
        "criterion": {"min_delivered": MIN_DELIVERED, "min_spotted": MIN_SPOTTED},
        "levels": rows,
        "cameras_served": served,
    }
