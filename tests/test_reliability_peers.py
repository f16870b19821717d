"""Peers coming and going: many connects and disconnects, a peer that vanishes without closing,
an answered offer that never connects. No peer, session or thread is left behind, memory stays
bounded, and the other peers keep streaming. Everything runs on 127.0.0.1, with the cheap
centre-crop aligner of test_reliability_fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("aiortc")
pytest.importorskip("aiohttp")

import psutil
from test_reliability_fuzz import SAMPLE, _post_raw, a_valid_offer, make_hub, rss_mb, start_server

from fesnet.realtime.viewers.remote_client import RemoteCamera, SourceTrack

pytestmark = pytest.mark.usefixtures("loopback_ice")


@pytest.mark.slow
def test_many_connects_and_disconnects_leave_nothing_behind(tiny_runtime: Any) -> None:
    """20 peers one after the other, half leaving without a word. No peer, session, pipeline or
    peer connection object survives them. RSS climbs over the first ~10 (allocator arenas, codec
    and TLS state warming up; measured over 30 cycles: 360 -> 423 MB by cycle 11, then 427-435 MB
    to cycle 30), so memory is compared over the later cycles only."""
    import gc

    hub = make_hub(tiny_runtime, max_sessions=4)
    cycles, warmup = 20, 10

    async def main() -> dict[str, Any]:
        server, runner, url = await start_server(hub, max_peers=4)
        proc = psutil.Process()
        try:
            rss, threads = [], []
            for i in range(cycles):
                cam = RemoteCamera(url, SourceTrack(str(SAMPLE), loop=True))
                await cam.connect()
                await asyncio.sleep(0.3)
                if i % 2:
                    await cam.close()  # leaves without a word
                else:
                    await cam.run(duration_s=0.1)  # says "end", waits for the last events
                for _ in range(100):
                    if not server.peers and not hub.sessions():
                        break
                    await asyncio.sleep(0.05)
                assert not server.peers and not hub.sessions(), f"cycle {i}: peer left behind"
                if i >= warmup - 1:
                    gc.collect()  # aiortc objects hold reference cycles: count live memory
                    rss.append(rss_mb())
                    threads.append(proc.num_threads())
            del cam  # the client's own connection, closed
            gc.collect()
            alive = Counter(
                type(o).__name__
                for o in gc.get_objects()
                if type(o).__name__ in ("RTCPeerConnection", "RtcPeer", "LiveSession", "Pipeline")
            )
            return {"rss": rss, "threads": threads, "alive": alive}
        finally:
            await runner.cleanup()

    r = asyncio.run(main())
    assert not r["alive"], r["alive"]
    assert r["rss"][-1] - r["rss"][0] < 60, r["rss"]
    names = Counter(t.name.rstrip("0123456789") for t in threading.enumerate())
    assert max(r["threads"]) <= 24, (r["threads"], names)  # executor threads, bounded


VANISHING_CLIENT = """
import asyncio, sys
from unittest import mock
import aioice.ice
from fesnet.realtime.viewers.remote_client import RemoteCamera, SourceTrack

async def main():
    cam = RemoteCamera(sys.argv[1], SourceTrack(sys.argv[2], loop=True))
    await cam.connect()
    print("connected", flush=True)
    await asyncio.sleep(3600)

with mock.patch.object(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"]):
    asyncio.run(main())
"""


@pytest.mark.slow
def test_a_peer_that_vanishes_without_closing_is_dropped(tiny_runtime: Any) -> None:
    """The client process is SIGKILLed mid-stream: no BYE, no DTLS close. ICE consent checks
    (RFC 7675; 5 s x 6 in aioice, shortened here) fail and the server frees the peer's session;
    a second peer streaming meanwhile is unaffected."""
    import aioice.ice

    hub = make_hub(tiny_runtime)

    async def main() -> dict[str, Any]:
        server, runner, url = await start_server(hub)
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", VANISHING_CLIENT, url, str(SAMPLE),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            line = await asyncio.wait_for(client.stdout.readline(), 60)
            assert line.strip() == b"connected"
            stayer = RemoteCamera(url, SourceTrack(str(SAMPLE), loop=True))
            await stayer.connect()
            await asyncio.sleep(1.0)
            assert len(server.peers) == 2
            client.send_signal(signal.SIGKILL)
            await client.wait()
            t0 = time.monotonic()
            while len(server.peers) > 1 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.1)
            dropped_after = time.monotonic() - t0
            stats_before = len(stayer.result.stats)
            await asyncio.sleep(1.5)
            r = {
                "dropped_after": dropped_after, "peers": len(server.peers),
                "sessions": len(hub.sessions()),
                "stayer_ok": stayer.pc.connectionState == "connected"
                and len(stayer.result.stats) > stats_before,
            }
            await stayer.run(duration_s=0.1)
            return r
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()
            await runner.cleanup()

    with (
        mock.patch.object(aioice.ice, "CONSENT_INTERVAL", 0.3),
        mock.patch.object(aioice.ice, "CONSENT_FAILURES", 3),
    ):
        r = asyncio.run(main())
    assert r["peers"] == 1 and r["sessions"] == 1, r
    assert r["dropped_after"] < 10, r
    assert r["stayer_ok"], r
    assert hub.sessions() == []


def test_an_answered_offer_that_never_connects_frees_its_slot(tiny_runtime: Any) -> None:
    """Without a connect timeout such a peer held its slot and session ~58 s (until aiortc's ICE
    gave up): max_peers such offers a minute would lock every camera out."""
    hub = make_hub(tiny_runtime)

    async def main() -> tuple[list[int], float, int]:
        import aiohttp

        server, runner, url = await start_server(hub, max_peers=2, connect_timeout_s=1.0)
        try:
            codes = []
            async with aiohttp.ClientSession() as http:
                for _ in range(3):
                    pc, sdp = await a_valid_offer()
                    await pc.close()  # the client goes away before ICE
                    body = json.dumps({"sdp": sdp, "type": "offer"}).encode()
                    codes.append(await _post_raw(http, f"{url}/offer", body, {}))
            t0 = time.monotonic()
            while server.peers and time.monotonic() - t0 < 15:
                await asyncio.sleep(0.1)
            return codes, time.monotonic() - t0, len(server.peers)
        finally:
            await runner.cleanup()

    codes, freed_after, left = asyncio.run(main())
    assert codes == [200, 200, 503]
    assert left == 0 and freed_after < 5
    assert hub.sessions() == []
