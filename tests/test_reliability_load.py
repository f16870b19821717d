"""Load: concurrent remote cameras on loopback until the CPU saturates.

Cameras stream the bundled real-face clip (30 FPS, 640x480, VP8 over aiortc) to one WebRTC server
whose sessions share one engine; each session runs the real mediapipe face tracker. The level
is raised 1 -> 2 -> 4 cameras. On the 2-core test machines that is past saturation (encode,
decode, FaceMesh and the model for 120 frames/s), so the server must degrade the way it is built
to: it never queues. Which stage gives first depends on the machine: since alignment and
inference run on separate threads, the four senders (in this same process, encoding VP8) are
the first to fall behind and deliver ~75 of 120 frames/s, which the sessions then process in
full (0 dropped, latency p50 ~70 ms); with a slower spotter (the serial worker before) frames
were dropped at each session's latest-only slot and reported. So the test holds both cases:
what arrives is processed or dropped (no backlog: at no moment does a session hold more frames
than its slot, its threads and its hand-over can), the slot drops appear in /health, memory stays
bounded and every camera keeps being served. Nothing is measured against the clock: a busy
machine only drops more. Slot drops themselves are forced and checked in tests/test_pipeline.py
(a slow engine).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

pytest.importorskip("aiortc")
pytest.importorskip("aiohttp")

import psutil

from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.viewers.hub import HubConfig, SpotHub
from fesnet.realtime.viewers.remote_client import RemoteCamera, SourceTrack
from fesnet.realtime.viewers.webrtc_server import ServerConfig, WebRtcServer

SAMPLE = SAMPLE_CLIP
LEVELS = (1, 2, 4)
LEVEL_S = 5.0




pytestmark = pytest.mark.usefixtures("loopback_ice")


IN_FLIGHT = 5
"""Frames a session can hold between arrival and being spotted: 1 in the latest-only slot, 1
being aligned, 2 in the align -> infer hand-over, 1 being spotted. More would be a backlog."""


def in_flight(session: Any) -> int:
    """Pushed - spotted - dropped, read in that order (a frame spotted or dropped meanwhile only
    lowers the count, so it never overstates the backlog)."""
    pushed = session.source.frames_read
    spotted = session.run.status()["frames"]
    return pushed - spotted - session.source.dropped


async def _wait_served(sessions: list[Any], before: list[int], timeout_s: float = 120.0) -> None:
    """Until every session spotted more frames than ``before`` (a generous timeout, not a speed
    gate: a loaded machine is slow, but a camera that is never served is a failure)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while any(s.run.status()["frames"] <= b for s, b in zip(sessions, before, strict=True)):
        assert asyncio.get_running_loop().time() < deadline, "a camera is not being served"
        await asyncio.sleep(0.2)


@pytest.mark.slow
def test_cameras_until_the_cpu_saturates_degrade_by_dropping(tiny_runtime: Any) -> None:
    hub = SpotHub.from_runtime(tiny_runtime, HubConfig(max_sessions=max(LEVELS)))
    proc = psutil.Process()

    async def main() -> list[dict[str, Any]]:
        import aiohttp

        server = WebRtcServer(hub, ServerConfig(port=0, max_peers=max(LEVELS)))
        runner = await server.start()
        url = f"http://127.0.0.1:{server.port}"
        cams: list[RemoteCamera] = []
        rows = []
        try:
            for level in LEVELS:
                while len(cams) < level:
                    cam = RemoteCamera(url, SourceTrack(str(SAMPLE), loop=True))
                    await cam.connect()
                    cams.append(cam)
                sessions = hub.sessions()
                assert len(sessions) == level
                before = [s.run.status()["frames"] for s in sessions]
                peak = 0
                for _ in range(int(LEVEL_S / 0.1)):  # sample the backlog while streaming
                    peak = max(peak, *(in_flight(s) for s in sessions))
                    await asyncio.sleep(0.1)
                await _wait_served(sessions, before)
                gc.collect()
                # Read our count before /health: frames keep dropping while the request runs,
                # so /health (read later) can only be >= this, never the other way round.
                dropped = sum(s.source.dropped for s in sessions)
                async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as resp:
                    health = await resp.json()
                rows.append({
                    "cameras": level, "peers": len(server.peers),
                    "spotted": [s.run.status()["frames"] - b
                                for s, b in zip(sessions, before, strict=True)],
                    "dropped": dropped,
                    "peak_in_flight": peak,
                    "slot_high_water": max(s.source.channel.high_water for s in sessions),
                    "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                    "health": health,
                    "running": all(s.running for s in sessions),
                    "behind_events": sum(
                        1 for c in cams for ev in c.result.events
                        if str(ev.get("message", "")).startswith("falling behind")
                    ),
                })
            return rows
        finally:
            await asyncio.gather(*(c.run(duration_s=0.1) for c in cams), return_exceptions=True)
            await runner.cleanup()

    rows = asyncio.run(main())
    for r in rows:
        print(r)
    assert [r["peers"] for r in rows] == list(LEVELS)
    for r in rows:
        assert r["running"], r  # every camera still served (each spotted more frames) ...
        assert min(r["spotted"]) > 0, r
        # ... and nothing queues: what arrives is spotted or dropped at the latest-only slot,
        # whatever the machine's speed (a slow one drops more, it never builds a backlog) ...
        assert r["peak_in_flight"] <= IN_FLIGHT and r["slot_high_water"] <= 1, r
        # ... and the slot drops are reported in /health.
        assert r["health"]["ok"] and r["health"]["frames_dropped"] >= r["dropped"], r
    assert rows[-1]["rss_mb"] - rows[0]["rss_mb"] < 300  # 3 more sessions (FaceMesh, codec, rings)
    assert hub.sessions() == []
