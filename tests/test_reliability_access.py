"""The WebRTC server against a hostile page, a careless client and a curious log reader (issue 15,
items 3, 4, 6, 7, 11, 13, 14, 16). Loopback only: every server here listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("aiortc")
pytest.importorskip("aiohttp")

from test_webrtc_server import a_valid_offer, make_hub, start_server

from fesnet.realtime.cli import main
from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.viewers.rtc import RtcPeer

pytestmark = pytest.mark.usefixtures("loopback_ice")
JSON = {"Content-Type": "application/json"}


async def request(
    url: str, method: str = "POST", body: bytes | str = b"", headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=body, headers=headers or {}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def raw_status(port: int, head: bytes, body: bytes = b"") -> int:
    """Send bytes as they are (header values no HTTP client would send) -> the status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 20)
    writer.close()
    return int(line.split()[1])


async def offer_body() -> tuple[Any, str]:
    pc, offer = await a_valid_offer()
    return pc, json.dumps(offer)


# -- items 3 and 16: the Authorization header ------------------------------------------------------
def test_any_authorization_bytes_get_401_and_the_scheme_is_case_insensitive(tiny_runtime) -> None:
    hub = make_hub(tiny_runtime)

    async def main_() -> dict[str, int]:
        server, runner, url = await start_server(hub, token="s3cret")
        codes: dict[str, int] = {}
        try:
            pc, body = await offer_body()
            data = body.encode()
            for name, value in {
                "ff_fe": b"Bearer \xff\xfe", "utf8": "Bearer ünïcødé".encode(),
                "latin1": b"Bearer \xe9t\xe9", "nul": b"Bearer s3c\x00ret",
                "bare_ff": b"\xff",
            }.items():
                head = (
                    b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                    b"\r\nAuthorization: " + value + b"\r\nContent-Length: "
                    + str(len(data)).encode() + b"\r\nConnection: close\r\n\r\n"
                )
                codes[name] = await raw_status(server.port, head, data)
            for scheme in ("bearer", "BEARER", "bEaReR"):
                status, _, _ = await request(
                    f"{url}/offer", body=body, headers={**JSON, "Authorization": f"{scheme} s3cret"}
                )
                codes[scheme] = status
                await server.close_peers()
            await pc.close()
            return codes
        finally:
            await runner.cleanup()

    codes = asyncio.run(main_())
    assert {codes[k] for k in ("ff_fe", "utf8", "latin1", "nul", "bare_ff")} <= {400, 401}
    assert codes["ff_fe"] == codes["utf8"] == codes["latin1"] == 401  # never a 500
    assert codes["bearer"] == codes["BEARER"] == codes["bEaReR"] == 200
    assert hub.sessions() == []


# -- item 4: cross-site requests and DNS rebinding -------------------------------------------------
def test_a_page_of_another_site_cannot_offer(tiny_runtime) -> None:
    """A cross-site ``fetch(..., {mode: "no-cors", body: sdp})``: text/plain with a foreign
    Origin. Before: accepted (200), four of them held every peer slot for 15 s."""
    hub = make_hub(tiny_runtime)

    async def main_() -> dict[str, int]:
        server, runner, url = await start_server(hub)
        host = f"127.0.0.1:{server.port}"
        codes: dict[str, int] = {}
        try:
            for name, headers in {
                "foreign_text": {"Origin": "https://evil.example", "Content-Type": "text/plain"},
                "foreign_json": {"Origin": "https://evil.example", **JSON},
                "null_origin": {"Origin": "null", **JSON},
                "same_origin_text": {"Origin": f"http://{host}", "Content-Type": "text/plain"},
                "no_origin_form": {"Content-Type": "application/x-www-form-urlencoded"},
                "rebound_host": {"Host": f"evil.example:{server.port}", **JSON},
                "same_origin_json": {"Origin": f"http://{host}", **JSON},
                "localhost_origin": {"Origin": f"http://localhost:{server.port}",
                                     "Host": f"localhost:{server.port}", **JSON},
                "no_origin_json": JSON,
            }.items():
                pc, body = await offer_body()
                codes[name] = (await request(f"{url}/offer", body=body, headers=headers))[0]
                await pc.close()
                await server.close_peers()
            return codes
        finally:
            await runner.cleanup()

    codes = asyncio.run(main_())
    assert codes["foreign_text"] == codes["foreign_json"] == codes["null_origin"] == 403
    assert codes["rebound_host"] == 403
    assert codes["same_origin_text"] == codes["no_origin_form"] == 415
    for ok in ("same_origin_json", "localhost_origin", "no_origin_json"):
        assert codes[ok] == 200, (ok, codes)
    assert hub.sessions() == []


def test_an_allow_listed_origin_may_offer(tiny_runtime) -> None:
    """A page served elsewhere on purpose (``--allow-origin``, e.g. behind a TLS proxy)."""
    hub = make_hub(tiny_runtime)

    async def main_() -> tuple[int, int]:
        server, runner, url = await start_server(hub, allowed_origins=("https://cam.example.org",))
        try:
            codes = []
            for origin in ("https://cam.example.org", "https://cam.example.org.evil.example"):
                pc, body = await offer_body()
                headers = {"Origin": origin, **JSON}
                codes.append((await request(f"{url}/offer", body=body, headers=headers))[0])
                await pc.close()
                await server.close_peers()
            return codes[0], codes[1]
        finally:
            await runner.cleanup()

    assert asyncio.run(main_()) == (200, 403)
    assert hub.sessions() == []


# -- items 6 and 14: tokens out of logs, /health ------------------------------------------------
def test_tokens_never_reach_the_logs_or_a_referer(
    tiny_runtime, caplog: pytest.LogCaptureFixture
) -> None:
    hub = make_hub(tiny_runtime)
    caplog.set_level(logging.INFO)

    async def main_() -> tuple[dict[str, str], str, str]:
        server, runner, url = await start_server(hub, token="s3cret-t0ken")
        try:
            _, page_headers, _ = await request(
                f"{url}/?token=s3cret-t0ken", "GET",
                headers={"Referer": "http://127.0.0.1/?token=s3cret-t0ken"},
            )
            pc, body = await offer_body()
            await request(f"{url}/offer?token=s3cret-t0ken", body=body, headers=JSON)
            await request(f"{url}/offer?token=wrong-one&x=1", body=body, headers=JSON)
            await pc.close()
            await server.close_peers()
            return page_headers, server.url()
        finally:
            await runner.cleanup()

    page_headers, plain_url = asyncio.run(main_())
    assert page_headers.get("Referrer-Policy") == "no-referrer"
    access_lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access_lines) >= 3 and any("/offer?token=" in line for line in access_lines)
    assert "s3cret-t0ken" not in caplog.text and "wrong-one" not in caplog.text
    assert "s3cret" not in plain_url


def test_the_page_url_carries_a_token_only_in_its_fragment(tiny_runtime) -> None:
    from fesnet.realtime.viewers.webrtc_server import ServerConfig, WebRtcServer

    server = WebRtcServer(make_hub(tiny_runtime), ServerConfig(token="s3cret"))
    assert server.url() == "http://127.0.0.1:8765/"
    assert server.url(with_token=True) == "http://127.0.0.1:8765/#token=s3cret"  # never sent


def test_health_without_the_token_says_only_ok(tiny_runtime) -> None:
    hub = make_hub(tiny_runtime)

    async def main_() -> tuple[dict, dict, dict]:
        _server, runner, url = await start_server(hub, token="s3cret")
        try:
            anonymous = json.loads((await request(f"{url}/health", "GET"))[2])
            wrong = json.loads(
                (await request(f"{url}/health", "GET", headers={"Authorization": "Bearer x"}))[2]
            )
            auth = {"Authorization": "Bearer s3cret"}
            full = json.loads((await request(f"{url}/health", "GET", headers=auth))[2])
            return anonymous, wrong, full
        finally:
            await runner.cleanup()

    anonymous, wrong, full = asyncio.run(main_())
    assert anonymous == wrong == {"ok": True}
    assert full["ok"] and {"peers", "rss_mb", "frames_dropped"} <= set(full)


# -- item 13: offers being parsed are not peers; aborted requests --------------------------------
def test_offers_being_parsed_do_not_make_the_server_full(tiny_runtime) -> None:
    """max_peers=1; a malformed offer is held inside ``accept`` while a good one arrives. Before,
    the one being parsed counted as a peer and the good offer got 503 'server full'."""
    hub = make_hub(tiny_runtime)
    real_accept = RtcPeer.accept
    release = asyncio.Event
    gate: dict[str, Any] = {}

    async def slow_for_bad(self: RtcPeer, offer: Any) -> Any:
        if "bad-offer" in offer.sdp:
            gate["entered"].set()
            await gate["release"].wait()
        return await real_accept(self, offer)

    bad_sdp = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=bad-offer\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n"

    async def main_() -> tuple[int, int, int]:
        gate["entered"], gate["release"] = release(), release()
        server, runner, url = await start_server(hub, max_peers=1)
        try:
            bad = asyncio.ensure_future(request(
                f"{url}/offer", body=json.dumps({"sdp": bad_sdp, "type": "offer"}), headers=JSON
            ))
            await asyncio.wait_for(gate["entered"].wait(), 20)
            pc, body = await offer_body()
            good = (await request(f"{url}/offer", body=body, headers=JSON))[0]
            gate["release"].set()
            bad_status = (await bad)[0]
            pc2, body2 = await offer_body()
            full = (await request(f"{url}/offer", body=body2, headers=JSON))[0]
            for p in (pc, pc2):
                await p.close()
            await server.close_peers()
            return good, bad_status, full
        finally:
            await runner.cleanup()

    with mock.patch.object(RtcPeer, "accept", slow_for_bad):
        good, bad_status, full = asyncio.run(main_())
    assert (good, bad_status, full) == (200, 400, 503)  # the limit still holds for real peers
    assert hub.sessions() == []


def test_an_aborted_offer_logs_one_line(tiny_runtime, caplog: pytest.LogCaptureFixture) -> None:
    hub = make_hub(tiny_runtime)
    caplog.set_level(logging.INFO)

    async def main_() -> None:
        server, runner, _url = await start_server(hub)
        try:
            for _ in range(3):
                _r, w = await asyncio.open_connection("127.0.0.1", server.port)
                w.write(
                    b"POST /offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                    b"\r\nContent-Length: 5000\r\n\r\n" + b'{"sdp": "v=0'
                )
                await w.drain()
                await asyncio.sleep(0.2)
                w.transport.abort()
            await asyncio.sleep(0.5)
        finally:
            await runner.cleanup()

    asyncio.run(main_())
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in caplog.text
    assert sum("offer aborted" in r.getMessage() for r in caplog.records) == 3


# -- item 7: the resolution of a peer's camera -----------------------------------------------------
class _FakeTrack:
    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames

    async def recv(self) -> Any:
        from aiortc.mediastreams import MediaStreamError

        if not self.frames:
            raise MediaStreamError
        return self.frames.pop(0)


class _FakeSession:
    """Keeps what the peer hands over, as a LiveSession's latest-only slot would, unconverted."""

    id = "fake"

    def __init__(self) -> None:
        self.handed_over: list[Any] = []

    def push_undecoded(self, decode: Any, pts_s: float, t_ns: int | None = None) -> bool:
        self.handed_over.append(decode)
        return True

    def close(self) -> None:
        pass


def test_frames_above_the_cap_are_downscaled_off_the_event_loop(
    tiny_runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4K and an 8K peer: the event loop only hands each frame over; the conversion happens
    where the session reads it (its align thread), and what comes out has at most
    ``max_frame_pixels`` pixels (aspect kept); a 640x480 camera is untouched. Before: the full 8K
    image (~100 MB) was converted on the event loop and pushed (issue 15, item 7)."""
    import threading

    import av

    from fesnet.realtime.viewers import rtc

    converted_on: list[str] = []
    convert = rtc.frame_to_bgr

    def recording(frame: Any, max_pixels: int) -> Any:
        converted_on.append(threading.current_thread().name)
        return convert(frame, max_pixels)

    monkeypatch.setattr(rtc, "frame_to_bgr", recording)

    def frame(w: int, h: int, i: int) -> Any:
        f = av.VideoFrame(w, h, "yuv420p")
        f.pts, f.time_base = i * 3000, Fraction(1, 90_000)
        return f

    sizes = [(3840, 2160), (7680, 4320), (640, 480), (1080, 1920)]
    frames = [frame(w, h, i) for i, (w, h) in enumerate(sizes)]
    session = _FakeSession()

    async def main_() -> RtcPeer:
        peer = RtcPeer(make_hub(tiny_runtime))  # the default cap: 1280 x 720 pixels
        peer.session = session  # type: ignore[assignment]
        await peer._read_video(_FakeTrack(frames))
        await peer.pc.close()
        return peer

    peer = asyncio.run(main_())
    assert peer.frames_received == 4 and len(session.handed_over) == 4
    assert converted_on == []  # nothing was converted on the event loop
    shapes: list[tuple[int, ...]] = []
    reader = threading.Thread(
        target=lambda: shapes.extend(d().shape for d in session.handed_over), name="align-fake"
    )
    reader.start()
    reader.join(60)
    assert converted_on == ["align-fake"] * 4
    assert len(shapes) == 4
    for (w, h), shape in zip(sizes, shapes, strict=True):
        assert shape[2] == 3 and shape[0] * shape[1] <= 1280 * 720
        assert abs(shape[1] / shape[0] - w / h) < 0.01  # aspect kept
    assert shapes[2] == (480, 640, 3)
    assert peer.frames_downscaled == 3


# -- item 11: ports and the remote camera ----------------------------------------------------------
def test_remote_camera_without_a_server_or_with_a_bad_url_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    rc_none = main(
        ["remote-camera", str(SAMPLE_CLIP), "--server", f"http://127.0.0.1:{closed_port}"]
    )
    err_none = capsys.readouterr().err
    rc_bad = main(["remote-camera", str(SAMPLE_CLIP), "--server", "not a url"])
    err_bad = capsys.readouterr().err
    rc_src = main(["remote-camera", "/no/such/clip.mp4"])
    err_src = capsys.readouterr().err
    assert (rc_none, rc_bad, rc_src) == (1, 2, 2)
    for err in (err_none, err_bad, err_src):
        assert "Traceback" not in err and err.count("fesnet-spot: error:") == 1, err


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fesnet.realtime.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_listening(port: int, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not start")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from fesnet.model import checkpoint
    from fesnet.model.fesnet import FESNet, FESNetConfig

    torch.manual_seed(0)
    return checkpoint.save(tmp_path_factory.mktemp("ckpt") / "tiny.pt", FESNet(FESNetConfig.tiny()))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_webrtc_server_start_port_clash_and_stop(signum: int, tiny_ckpt: Path) -> None:
    """The server's own output never shows a given token; a second server on the same port says
    so in one line (exit 2); a stop signal ends the server cleanly (exit 0)."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["webrtc-server", "--port", str(port), "--checkpoint", str(tiny_ckpt),
            "--backend", "torch", "--token", "s3cret-t0ken"]
    first = _spawn(args)
    try:
        _wait_listening(port, first)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(f"http://127.0.0.1:{port}/?token=s3cret-t0ken", timeout=10).close()
        second = _spawn(args)
        _out2, err2 = second.communicate(timeout=240)
    finally:
        first.send_signal(signum)
        out1, err1 = first.communicate(timeout=60)
    assert second.returncode == 2, err2
    assert "Traceback" not in err2 and f"cannot listen on 127.0.0.1:{port}" in err2
    assert first.returncode == 0, err1
    assert "Traceback" not in err1
    assert "s3cret-t0ken" not in out1 + err1
    assert "GET /?token=[redacted]" in err1  # the access log line, redacted
