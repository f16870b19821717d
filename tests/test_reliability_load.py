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
what arrives is processed or dropped (no backlog), the slot drops agree with /health, latency
and memory stay bounded and every camera keeps being served. Slot drops themselves are forced
and checked in tests/test_pipeline.py (a slow engine).
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiortc")
pytest.importorskip("aiohttp")

import psutil

from fesnet.realtime.viewers.hub import HubConfig, SpotHub
from fesnet.realtime.viewers.remote_client import RemoteCamera, SourceTrack
from fesnet.realtime.viewers.webrtc_server import ServerConfig, WebRtcServer

SAMPLE = Path(__file__).resolve().parents[1] / "realtime" / "assets" / "sample.mp4"
LEVELS = (1, 2, 4)
LEVEL_S = 5.0




pytestmark = pytest.mark.usefixtures("loopback_ice")


def _last(cam: RemoteCamera) -> dict[str, Any]:
    return cam.result.stats[-1] if cam.result.stats else {"frames": 0, "dropped": 0}


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
                await asyncio.sleep(1.5)  # settle: sessions load FaceMesh
                start = [_last(c) for c in cams]
                sent0 = sum(c.track.frames_sent for c in cams)
                await asyncio.sleep(LEVEL_S)
                end = [_last(c) for c in cams]
                sent = sum(c.track.frames_sent for c in cams) - sent0
                gc.collect()
                async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as resp:
                    health = await resp.json()
                frames = [e["frames"] - s["frames"] for s, e in zip(start, end, strict=True)]
                dropped = [e["dropped"] - s["dropped"] for s, e in zip(start, end, strict=True)]
                lat = [e.get("score_latency_p50_ms") or 0.0 for e in end]
                rows.append({
                    "cameras": level, "peers": len(server.peers),
                    "input_fps": round(sum(e.get("input_fps", 0.0) for e in end), 1),
                    "processed_fps": round(sum(frames) / LEVEL_S, 1),
                    "dropped_fps": round(sum(dropped) / LEVEL_S, 1),
                    "sent_fps": round(sent / LEVEL_S, 1),
                    "min_processed_per_camera": min(frames),
                    "latency_p50_ms_max": round(max(lat), 1),
                    "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                    "health": health,
                    "cpu_percent": psutil.cpu_percent(interval=None),
                    "running": all(e.get("running") for e in end),
                    "behind_events": sum(
                        1 for c in cams for ev in c.result.events
                        if str(ev.get("message", "")).startswith("falling behind")
                    ),
                })  # fmt: skip
            return rows
        finally:
            await asyncio.gather(*(c.run(duration_s=0.1) for c in cams), return_exceptions=True)
            await runner.cleanup()

    psutil.cpu_percent(interval=None)
    rows = asyncio.run(main())
    for r in rows:
        print(r)
    top = rows[-1]
    assert [r["peers"] for r in rows] == list(LEVELS)
    assert all(r["running"] for r in rows)
    for r in rows:
        # No backlog: what arrives is processed or dropped at the latest-only slot ...
        assert r["processed_fps"] + r["dropped_fps"] >= 0.85 * r["input_fps"], r
        # ... slot drops are reported in the stats and in /health alike ...
        assert r["health"]["ok"]
        assert (r["dropped_fps"] > 0) <= (r["health"]["frames_dropped"] > 0), r
    assert top["min_processed_per_camera"] > 0  # ... and every camera is still being served
    for r in rows:
        assert r["latency_p50_ms_max"] < 2000, r  # bounded, not a growing backlog
    assert top["rss_mb"] - rows[0]["rss_mb"] < 300  # 3 more sessions (FaceMesh, codec, rings)
    assert hub.sessions() == []
