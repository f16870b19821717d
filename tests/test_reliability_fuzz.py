"""Network input: the WebRTC server's ``/offer`` fuzzed with hundreds of generated (seeded)
malformed and oversized offers, garbage on the events data channel and tokens (the peers'
lifecycle under churn: test_reliability_peers.py). The server must stay up, keep serving the
other peers and keep its memory bounded. Everything runs on 127.0.0.1.

The spotter's face aligner is replaced by a centre crop (no mediapipe): these tests are about the
transport and the session lifecycle; the real aligner is exercised in test_webrtc_server.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("aiortc")
pytest.importorskip("aiohttp")

import psutil

from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.viewers.access import is_loopback, resolve_token
from fesnet.realtime.viewers.hub import HubConfig, SpotHub
from fesnet.realtime.viewers.remote_client import RemoteCamera, SourceTrack
from fesnet.realtime.viewers.webrtc_server import ServerConfig, WebRtcServer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = SAMPLE_CLIP
MAX_SDP = 16 * 1024
FUZZ_SEED = 20261124
# never a 5xx crash, never a dropped connection; 415 for a body not sent as JSON
ALLOWED = {200, 400, 401, 415, 503}


@dataclass(frozen=True)
class _Result:
    crop: np.ndarray | None
    n_faces: int
    landmarks: Any = None
    transform: Any = None


class CenterCropAligner:
    """The centre square of the frame as the "face" (cheap, real image content)."""

    def align(self, frame_bgr: np.ndarray) -> _Result:
        import cv2

        h, w = frame_bgr.shape[:2]
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        crop = cv2.resize(frame_bgr[y : y + s, x : x + s], (112, 112))[:, :, ::-1]
        return _Result(np.ascontiguousarray(crop), 1)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class LightHub(SpotHub):
    def open_push(self, prefix: str = "peer", aligner: Any = None) -> Any:
        return super().open_push(prefix, aligner or CenterCropAligner())




pytestmark = pytest.mark.usefixtures("loopback_ice")


def make_hub(tiny_runtime: Any, max_sessions: int = 8) -> LightHub:
    return LightHub.from_runtime(tiny_runtime, HubConfig(max_sessions=max_sessions))


async def start_server(hub: SpotHub, **cfg: Any) -> tuple[WebRtcServer, Any, str]:
    server = WebRtcServer(hub, ServerConfig(port=0, **cfg))
    runner = await server.start()
    return server, runner, f"http://127.0.0.1:{server.port}"


async def a_valid_offer() -> tuple[Any, str]:
    from aiortc import RTCPeerConnection, VideoStreamTrack

    from fesnet.realtime.viewers.rtc import rtc_configuration

    pc = RTCPeerConnection(rtc_configuration())
    pc.createDataChannel("events")
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


# -- the fuzz corpus -------------------------------------------------------------------------------
def _mutate_sdp(sdp: str, rng: random.Random) -> tuple[str, str]:
    """One seeded mutation of a valid SDP -> (kind, mutated sdp)."""
    lines = sdp.split("\r\n")
    kind = rng.choice([
        "delete_line", "duplicate_line", "swap_lines", "truncate", "insert_bytes",
        "extreme_number", "line_endings", "repeat_media", "long_attribute", "bad_fingerprint",
        "drop_ice", "bad_proto", "bad_rtpmap", "nul_and_unicode", "shuffle", "bad_direction",
        "many_candidates", "bad_candidate", "empty_values", "bad_version",
    ])
    i = rng.randrange(len(lines))
    if kind == "delete_line":
        for _ in range(rng.randint(1, 4)):
            if len(lines) > 1:
                del lines[rng.randrange(len(lines))]
    elif kind == "duplicate_line":
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif kind == "swap_lines":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "truncate":
        return kind, sdp[: rng.randrange(4, len(sdp))]
    elif kind == "insert_bytes":
        junk = "".join(chr(rng.randrange(0, 0x2FFF)) for _ in range(rng.randint(1, 64)))
        pos = rng.randrange(len(sdp))
        return kind, sdp[:pos] + junk + sdp[pos:]
    elif kind == "extreme_number":
        nums = [m.span() for m in re.finditer(r"\d+", sdp)]
        a, b = rng.choice(nums)
        value = rng.choice(["-1", "0", str(2**64), "9" * 40, "NaN", "1e309", "-0", "0x10"])
        return kind, sdp[:a] + value + sdp[b:]
    elif kind == "line_endings":
        return kind, sdp.replace("\r\n", rng.choice(["\n", "\r", "", "\r\r\n", " "]))
    elif kind == "repeat_media":
        m = sdp.find("m=video")
        return kind, sdp + sdp[m:] * rng.randint(2, 8)
    elif kind == "long_attribute":
        lines.insert(i, "a=x-junk:" + "A" * rng.randint(1000, max(1001, MAX_SDP - len(sdp) - 64)))
    elif kind == "bad_fingerprint":
        lines = [
            "a=fingerprint:" + rng.choice(["sha-999 00:11", "sha-256 zz", "", "sha-256"])
            if ln.startswith("a=fingerprint") else ln
            for ln in lines
        ]
    elif kind == "drop_ice":
        lines = [ln for ln in lines if not ln.startswith(("a=ice-ufrag", "a=ice-pwd"))]
    elif kind == "bad_proto":
        lines = [
            re.sub(r"UDP/TLS/RTP/SAVPF", rng.choice(["TCP", "RTP/AVP", "x", ""]), ln)
            for ln in lines
        ]
    elif kind == "bad_rtpmap":
        lines = [
            ln.split(" ")[0] + " " + rng.choice(["VP8/-1", "", "H264", "x/y/z/w", "VP8/90000/9"])
            if ln.startswith("a=rtpmap") else ln
            for ln in lines
        ]
    elif kind == "nul_and_unicode":
        lines[i] = lines[i] + rng.choice(["\x00", "\ufeff", "\u202e", "é", "\U0001f600", "\x7f"])
    elif kind == "shuffle":
        rng.shuffle(lines)
    elif kind == "bad_direction":
        lines = [
            "a=" + rng.choice(["inactive", "sendonly", "recvonly", "bogus"])
            if ln in ("a=sendrecv", "a=sendonly") else ln
            for ln in lines
        ]
    elif kind == "many_candidates":
        cand = "a=candidate:1 1 udp 2130706431 127.0.0.1 {} typ host"
        lines[i:i] = [cand.format(rng.randrange(1, 65535)) for _ in range(rng.randint(10, 200))]
    elif kind == "bad_candidate":
        lines.insert(i, "a=candidate:" + rng.choice(["", "x", "1 1 udp", "1 1 udp 1 ::: 0 typ"]))
    elif kind == "empty_values":
        lines = [ln.split("=")[0] + "=" if rng.random() < 0.3 else ln for ln in lines]
    elif kind == "bad_version":
        lines[0] = rng.choice(["v=1", "v=", "v=-0", "V=0"])
    return kind, "\r\n".join(lines)


def _json_level_cases(sdp: str, rng: random.Random) -> list[tuple[str, bytes, dict[str, str]]]:
    """Bodies and headers that are wrong before the SDP is even looked at."""
    j = "application/json"
    deep = "[" * 5000 + "]" * 5000
    return [
        ("empty_body", b"", {}),
        ("not_json", b"hello", {}),
        ("invalid_utf8", b"\xff\xfe\xfa" * 10, {}),
        ("json_null", b"null", {}),
        ("json_list", b"[1,2,3]", {}),
        ("json_number", b"1e999", {}),
        ("deep_nesting", deep.encode(), {}),
        ("sdp_int", json.dumps({"sdp": 5, "type": "offer"}).encode(), {}),
        ("sdp_list", json.dumps({"sdp": [sdp], "type": "offer"}).encode(), {}),
        ("sdp_null", json.dumps({"sdp": None, "type": "offer"}).encode(), {}),
        ("type_answer", json.dumps({"sdp": sdp, "type": "answer"}).encode(), {}),
        ("type_missing", json.dumps({"sdp": sdp}).encode(), {}),
        ("type_int", json.dumps({"sdp": sdp, "type": 1}).encode(), {}),
        ("sdp_whitespace", json.dumps({"sdp": " \r\n\t", "type": "offer"}).encode(), {}),
        ("extra_keys", json.dumps({"sdp": sdp, "type": "offer", "x": "y" * 1000}).encode(), {}),
        (
            "oversized_sdp",
            json.dumps({"sdp": sdp + "a=x:" + "y" * MAX_SDP, "type": "offer"}).encode(),
            {},
        ),
        ("oversized_body", b'{"sdp":"' + b"v" * (MAX_SDP * 4) + b'","type":"offer"}', {}),
        ("huge_body", b"{" + b" " * 2_000_000 + b"}", {}),
        (
            "wrong_content_type",
            json.dumps({"sdp": sdp, "type": "offer"}).encode(),
            {"Content-Type": "text/plain"},
        ),
        ("utf16_body", json.dumps({"sdp": sdp, "type": "offer"}).encode("utf-16"), {}),
        ("bom_body", b"\xef\xbb\xbf" + json.dumps({"sdp": "v=0", "type": "offer"}).encode(), {}),
        (
            "no_video",
            json.dumps({"sdp": sdp.replace("m=video", "m=audio"), "type": "offer"}).encode(),
            {"Content-Type": j},
        ),
        ("random_bytes", bytes(rng.randrange(256) for _ in range(3000)), {}),
    ]


def fuzz_cases(sdp: str, n: int, seed: int = FUZZ_SEED) -> list[tuple[str, bytes, dict[str, str]]]:
    """``n`` seeded cases: the JSON-level ones, then SDP mutations (1-3 stacked)."""
    rng = random.Random(seed)
    cases = _json_level_cases(sdp, rng)
    while len(cases) < n:
        kinds, s = [], sdp
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            kind, s = _mutate_sdp(s, rng)
            kinds.append(kind)
        cases.append(("+".join(kinds), json.dumps({"sdp": s, "type": "offer"}).encode(), {}))
    return cases[:n]


async def _post_raw(http: Any, url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST as a client sends an offer (JSON) unless the case sets its own Content-Type."""
    headers = {"Content-Type": "application/json", **headers}
    async with http.post(url, data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def _fuzz(
    server: WebRtcServer, url: str, cases: list, keep: frozenset = frozenset()
) -> Counter:
    """Post every case; close the peer an accepted one created (the client never follows up),
    leaving the peers in ``keep`` alone. Returns status counts."""
    import aiohttp

    statuses: Counter = Counter()
    async with aiohttp.ClientSession() as http:
        for name, body, headers in cases:
            try:
                status = await _post_raw(http, f"{url}/offer", body, headers)
            except aiohttp.ClientError as e:
                raise AssertionError(f"case {name}: the server dropped the connection: {e}") from e
            assert status in ALLOWED, (name, status)
            statuses[status] += 1
            if status == 200:
                await asyncio.gather(*(p.close() for p in server.peers - keep))
    return statuses


def test_offer_fuzz_never_crashes_the_server(tiny_runtime: Any) -> None:
    """250 generated cases against a fresh server; then a real offer is still answered."""
    hub = make_hub(tiny_runtime)

    async def main() -> tuple[Counter, int, dict]:
        import aiohttp

        server, runner, url = await start_server(hub, max_sdp_bytes=MAX_SDP, max_peers=8)
        try:
            pc, sdp = await a_valid_offer()
            await pc.close()
            statuses = await _fuzz(server, url, fuzz_cases(sdp, 250))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/health") as resp:
                    health = await resp.json()
                pc2, sdp2 = await a_valid_offer()
                body = json.dumps({"sdp": sdp2, "type": "offer"}).encode()
                final = await _post_raw(http, f"{url}/offer", body, {})
                await pc2.close()
                async with http.get(f"{url}/offer") as resp:
                    assert resp.status == 405
            await server.close_peers()
            return statuses, final, health
        finally:
            await runner.cleanup()

    statuses, final, health = asyncio.run(main())
    assert sum(statuses.values()) == 250
    assert statuses[400] >= 150  # most mutations are refused ...
    assert set(statuses) <= {200, 400, 415}  # ... and none hurts the server
    assert statuses[415] == 1  # the one case sent as text/plain
    assert health["ok"] and final == 200
    assert hub.sessions() == []


@pytest.mark.slow
def test_offer_fuzz_while_a_real_peer_streams(tiny_runtime: Any) -> None:
    """500 more cases (other seeds) while one camera streams: it keeps getting frames through and
    stats back, and the server's memory levels off (RSS after each batch of 100 following a warm-up
    batch; the first batches grow the heap, the last 200 cases must not)."""
    import gc

    hub = make_hub(tiny_runtime)

    async def main() -> dict[str, Any]:
        server, runner, url = await start_server(hub, max_sdp_bytes=MAX_SDP, max_peers=8)
        try:
            cam = RemoteCamera(url, SourceTrack(str(SAMPLE), loop=True))
            await cam.connect()
            await asyncio.sleep(1.0)
            pc, sdp = await a_valid_offer()
            await pc.close()
            keep = frozenset(server.peers)
            assert len(keep) == 1
            warm = await _fuzz(server, url, fuzz_cases(sdp, 100, seed=1), keep)
            frames0 = len(cam.result.stats)
            statuses: Counter = Counter()
            rss = []
            for batch in range(4):
                statuses += await _fuzz(server, url, fuzz_cases(sdp, 100, seed=2 + batch), keep)
                gc.collect()
                rss.append(rss_mb())
            await asyncio.sleep(1.5)
            alive = cam.pc.connectionState == "connected"
            stats_during = len(cam.result.stats) - frames0
            last = cam.result.stats[-1] if cam.result.stats else {}
            await cam.finish()
            await cam.close()
            return {
                "statuses": statuses + warm, "rss": rss, "alive": alive,
                "stats_during": stats_during, "last": last, "ended": cam._server_done.is_set(),
            }
        finally:
            await runner.cleanup()

    r = asyncio.run(main())
    assert sum(r["statuses"].values()) == 500
    assert r["alive"] and r["ended"]
    assert r["stats_during"] >= 2  # the peer kept getting stats while the fuzz ran
    assert r["last"]["frames"] > 30 and r["last"]["running"]
    print("RSS after each batch of 100 offers (MB):", [round(x) for x in r["rss"]])
    assert r["rss"][-1] - r["rss"][1] < 30, r["rss"]


# -- access ----------------------------------------------------------------------------------------
def test_auth_is_on_by_default_beyond_loopback() -> None:
    for host in ("0.0.0.0", "", "::", "192.168.1.20", "10.0.0.1", "my-laptop.local", "[::]"):
        assert not is_loopback(host)
        token = resolve_token(host, None)
        assert token and len(token) >= 16, host
    assert len({resolve_token("0.0.0.0", None) for _ in range(20)}) == 20  # random each time
    for host in ("127.0.0.1", "127.8.9.10", "localhost", "::1"):
        assert resolve_token(host, None) is None


def test_token_fuzz_only_the_exact_token_opens(tiny_runtime: Any) -> None:
    hub = make_hub(tiny_runtime)
    token = "s3cret-Token_0123456789"
    rng = random.Random(FUZZ_SEED)
    wrong = [
        "", " ", token[:-1], token + "x", token.upper(), token.lower(), token[::-1],
        "x" * 8000, token[:8], "Bearer" + token, token + "\x00", "é" + token,
        *("".join(rng.choice(token) for _ in range(len(token))) for _ in range(40)),
    ]

    async def main() -> tuple[Counter, Counter, int]:
        import aiohttp

        server, runner, url = await start_server(hub, token=token)
        try:
            pc, sdp = await a_valid_offer()
            body = json.dumps({"sdp": sdp, "type": "offer"}).encode()
            header_codes, query_codes = Counter(), Counter()
            opened: list[str] = []
            async with aiohttp.ClientSession() as http:
                for w in wrong:
                    for scheme in ("Bearer ", "bearer ", "Basic ", ""):
                        value = scheme + w
                        if value.isascii() and "\x00" not in value:
                            h = {"Authorization": value}
                            code = await _post_raw(http, f"{url}/offer", body, h)
                            header_codes[code] += 1
                            if code == 200:
                                opened.append(value)
                    q = f"{url}/offer?" + urllib.parse.urlencode({"token": w})
                    query_codes[await _post_raw(http, q, body, {})] += 1
                h = {"Authorization": f"Bearer {token}"}
                ok = await _post_raw(http, f"{url}/offer", body, h)
            await pc.close()
            await server.close_peers()
            assert not opened, opened
            return header_codes, query_codes, ok
        finally:
            await runner.cleanup()

    header_codes, query_codes, ok = asyncio.run(main())
    assert set(header_codes) == {401} and set(query_codes) == {401}
    assert sum(header_codes.values()) + sum(query_codes.values()) > 200
    assert ok == 200
    assert hub.sessions() == []


# -- data channel, churn, vanishing peers ----------------------------------------------------------
def garbage_messages(n: int, seed: int = FUZZ_SEED) -> list[str | bytes]:
    rng = random.Random(seed)
    fixed: list[str | bytes] = [
        "", "null", "[]", "{}", "1e999", '{"type": null}', '{"type": ["end"]}', '{"type": "END"}',
        '{"type": "stats"}', '{"type": 1}', "[" * 3000 + "]" * 3000, "x" * 60_000,
        b"\x00" * 1000, b"\xff\xfe", '{"type": "end"', "\ud7ff\ue000",
    ]
    out = list(fixed)
    while len(out) < n:
        if rng.random() < 0.5:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096))))
        else:
            out.append("".join(chr(rng.randrange(32, 0xD7FF)) for _ in range(rng.randint(1, 512))))
    return out


@pytest.mark.slow
def test_garbage_on_the_data_channel_is_ignored(tiny_runtime: Any) -> None:
    hub = make_hub(tiny_runtime)
    messages = garbage_messages(300)

    async def main() -> dict[str, Any]:
        server, runner, url = await start_server(hub)
        try:
            cam = RemoteCamera(url, SourceTrack(str(SAMPLE), loop=True))
            await cam.connect()
            await asyncio.sleep(1.0)
            before = len(cam.result.stats)
            for m in messages:
                cam.channel.send(m)
                await asyncio.sleep(0)
            await asyncio.sleep(2.5)
            after = cam.result.stats[-1]
            alive = cam.pc.connectionState == "connected" and len(server.peers) == 1
            await cam.finish()  # a proper {"type": "end"} still ends the stream cleanly
            ended = cam._server_done.is_set()
            await cam.close()
            return {"before": before, "n_stats": len(cam.result.stats), "after": after,
                    "alive": alive, "ended": ended}
        finally:
            await runner.cleanup()

    r = asyncio.run(main())
    assert r["alive"] and r["ended"]
    assert r["n_stats"] >= r["before"] + 2  # stats kept coming while the garbage arrived
    assert r["after"]["running"] and r["after"]["frames"] > 0
    assert hub.sessions() == []
