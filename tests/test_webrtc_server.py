"""The standalone WebRTC server over loopback aiortc (no browser): the Python remote camera gets
events back, several peers run at once and one leaving does not disturb the others, bad offers
get 400 without hurting the server, tokens and peer limits are enforced.

A tiny random checkpoint stands in for the trained one: these tests are about transport and
session isolation, not about what the model spots. Frames are the bundled real-face sample clip.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("aiortc")
pytest.importorskip("aiohttp")

from fesnet.calibration.baseline import BaselineConfig, session_phase
from fesnet.realtime.bench.fakecam import real_face_frames
from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.viewers.access import is_loopback, resolve_token, token_ok
from fesnet.realtime.viewers.hub import HubConfig, SpotHub
from fesnet.realtime.viewers.remote_client import RemoteCamera, SourceTrack
from fesnet.realtime.viewers.rtc import OfferError, RtpClock, parse_offer
from fesnet.realtime.viewers.webrtc_server import ServerConfig, WebRtcServer


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real-face clip (2 s at 30 FPS)."""
    if SAMPLE_CLIP.is_file():
        return SAMPLE_CLIP
    import cv2

    path = tmp_path_factory.mktemp("clip") / "face.mp4"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for frame in real_face_frames(60):
        out.write(frame)
    out.release()
    return path


pytestmark = pytest.mark.usefixtures("loopback_ice")


def make_hub(tiny_runtime, calibrate_s: float = 0.0, **config) -> SpotHub:
    """The viewers' hub; ``calibrate_s`` > 0: camera sessions calibrate first, as with
    ``fesnet-spot webrtc-server --calibrate-s``."""
    if calibrate_s > 0:
        config["camera_phase"] = session_phase(BaselineConfig(calibrate_s))
    return SpotHub.from_runtime(tiny_runtime, HubConfig(**{"max_sessions": 4, **config}))


async def start_server(hub: SpotHub, **cfg) -> tuple[WebRtcServer, object, str]:
    server = WebRtcServer(hub, ServerConfig(port=0, **cfg))
    runner = await server.start()
    return server, runner, f"http://127.0.0.1:{server.port}"


async def post(url: str, body: bytes | str, headers: dict | None = None) -> tuple[int, dict]:
    """POST ``body`` as JSON (as every client sends an offer) unless ``headers`` say otherwise."""
    import aiohttp

    headers = {"Content-Type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def a_valid_offer() -> tuple[object, dict]:
    """A real aiortc offer with a video track and the events channel."""
    from aiortc import RTCPeerConnection, VideoStreamTrack

    from fesnet.realtime.viewers.rtc import rtc_configuration

    pc = RTCPeerConnection(rtc_configuration())
    pc.createDataChannel("events")
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return pc, {"sdp": pc.localDescription.sdp, "type": "offer"}


# -- pure pieces -----------------------------------------------------------------------------------
def test_parse_offer_rejects_bad_shapes() -> None:
    good = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    assert parse_offer({"sdp": good, "type": "offer"}).type == "offer"
    for bad in (
        None, [], "x", {"type": "offer"}, {"sdp": good, "type": "answer"},
        {"sdp": "", "type": "offer"},
        {"sdp": "hello", "type": "offer"}, {"sdp": "v=0\r\nm=audio 9 RTP 0\r\n", "type": "offer"},
        {"sdp": good + "a=x:" + "y" * 70_000 + "\r\n", "type": "offer"},
    ):
        with pytest.raises(OfferError):
            parse_offer(bad)


def test_rtp_clock_unwraps_and_drops_backwards_frames() -> None:
    clock = RtpClock()
    tb = 1 / 90_000
    assert clock.seconds(2**32 - 3000, tb) == 0.0
    assert clock.seconds(0, tb) == pytest.approx(3000 * tb)  # wrapped past 2**32
    assert clock.seconds(3000, tb) == pytest.approx(6000 * tb)
    assert clock.seconds(0, tb) is None  # back in time
    assert clock.seconds(3000, tb) is None  # repeated
    assert clock.seconds(6000, tb) == pytest.approx(9000 * tb)


def test_token_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert resolve_token("127.0.0.1", None) is None
    generated = resolve_token("0.0.0.0", None)
    assert generated and len(generated) >= 16
    assert resolve_token("0.0.0.0", "abc") == "abc"
    assert token_ok(None, None) and token_ok("abc", "abc")
    assert not token_ok("abc", None) and not token_ok("abc", "abd")


# -- loopback servers ------------------------------------------------------------------------------
@pytest.mark.slow
def test_remote_camera_streams_and_receives_events(tiny_runtime, clip: Path) -> None:
    hub = make_hub(tiny_runtime)

    async def main():
        server, runner, url = await start_server(hub)
        try:
            cam = RemoteCamera(url, SourceTrack(str(clip), max_frames=75))
            await cam.connect()
            result = await cam.run(duration_s=15)
            await asyncio.sleep(0.2)
            return result, len(server.peers)
        finally:
            await runner.cleanup()

    result, peers_left = asyncio.run(main())
    assert result.stream == "peer0"
    assert result.frames_sent == 75
    assert [e["type"] for e in result.of_type("face_found")] == ["face_found"]
    assert all(e["stream"] == "peer0" for e in result.events)
    # What holds on any machine: how many frames arrive and are spotted depends on its load
    # (on a loaded one the latest-only slot drops more; here 30 of 75 were spotted at load 13
    # on 2 cores), so the counts are checked for consistency, not against the clock.
    last = result.stats[-1]
    assert 0 < last["frames_received"] <= result.frames_sent  # frames arrive, none invented
    assert 0 < last["frames"] <= last["frames_in"] <= last["frames_received"]
    # every frame pushed is spotted, dropped at the slot, or still in the session (slot 1,
    # align 1, hand-over 2, infer 1); frames_in is read first, so this never overstates
    assert last["frames_in"] - last["frames"] - last["dropped"] <= 5
    assert max(s["input_fps"] for s in result.stats) > 0  # the camera's rate is reported
    assert peers_left == 0 and hub.sessions() == []


@pytest.mark.slow
def test_camera_sessions_calibrate_first_and_can_skip_it(tiny_runtime, clip: Path) -> None:
    """With a calibration phase, a camera's events start with calibrating -> calibrated (and
    the stats carry the phase and the person's thresholds); a camera that asks to skip gets
    calibration_skipped instead."""
    hub = make_hub(tiny_runtime, calibrate_s=1.0)

    async def main():
        _server, runner, url = await start_server(hub)
        try:
            cam = RemoteCamera(url, SourceTrack(str(clip), max_frames=120))
            await cam.connect()
            calibrated = await cam.run(duration_s=20)
            cam = RemoteCamera(url, SourceTrack(str(clip), max_frames=45))
            await cam.connect()
            await cam.skip_calibration()
            skipped = await cam.run(duration_s=20)
            return calibrated, skipped
        finally:
            await runner.cleanup()

    calibrated, skipped = asyncio.run(main())
    states = [e["state"] for e in calibrated.of_type("status") if "calibrat" in e.get("state", "")]
    assert states == ["calibrating", "calibrated"], calibrated.events
    done = calibrated.of_type("status")[-1]
    assert 0 < done["on_threshold"] < 1 and done["rest_slots"] >= 60
    phase = calibrated.stats[-1]["calibration"]
    assert phase["phase"] == "calibrated" and phase["on_threshold"] == pytest.approx(
        done["on_threshold"], abs=1e-5
    )
    t_calibrated = next(e["t_s"] for e in calibrated.events if e.get("state") == "calibrated")
    assert all(e["t_s"] >= t_calibrated for e in calibrated.of_type("expression"))
    assert "calibration_skipped" in [e.get("state") for e in skipped.of_type("status")]
    assert skipped.stats[-1]["calibration"]["phase"] == "skipped"


@pytest.mark.slow
def test_several_peers_one_leaving_does_not_disturb_the_others(tiny_runtime, clip: Path) -> None:
    hub = make_hub(tiny_runtime)

    async def main():
        server, runner, url = await start_server(hub, max_peers=3)
        try:
            cams = [RemoteCamera(url, SourceTrack(str(clip), max_frames=90)) for _ in range(3)]
            for cam in cams:
                await cam.connect()
            assert len(server.peers) == 3
            await asyncio.sleep(1.0)
            leaver = cams[1]
            await leaver.close()  # leaves mid-stream, without saying goodbye
            for _ in range(50):
                if len(server.peers) == 2:
                    break
                await asyncio.sleep(0.1)
            peers_after_leave = len(server.peers)
            stayers = await asyncio.gather(*(cam.run(duration_s=20) for cam in (cams[0], cams[2])))
            return leaver.result, stayers, peers_after_leave
        finally:
            await runner.cleanup()

    leaver, stayers, peers_after_leave = asyncio.run(main())
    assert peers_after_leave == 2
    streams = {leaver.stream} | {r.stream for r in stayers}
    assert len(streams) == 3  # one spotter state each
    for r in stayers:
        assert r.frames_sent == 90
        assert r.of_type("face_found"), "every remaining peer gets its own face event"
        assert all(e["stream"] == r.stream for e in r.events)  # no cross-talk
        assert r.stats[-1]["frames_received"] >= 70
        assert not r.stats[-1]["running"]  # ended by its own end-of-stream, not by the leaver
    assert hub.sessions() == []


def test_malformed_and_oversized_offers_get_400_and_server_stays_healthy(tiny_runtime) -> None:
    hub = make_hub(tiny_runtime)

    async def main():
        import aiohttp

        server, runner, url = await start_server(hub, max_sdp_bytes=8192)
        try:
            codes = []
            garbage_sdp = "v=0\r\nm=video this is not sdp\r\na=garbage\r\n"
            no_ice_sdp = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n"
            bodies = [
                b"not json", b"\xff\xfe\x00", b"[]", b'{"type": "offer"}',
                json.dumps({"sdp": garbage_sdp, "type": "offer"}),
                json.dumps({"sdp": no_ice_sdp, "type": "offer"}),
                json.dumps({"sdp": "v=0\r\nm=video " + "x" * 9000, "type": "offer"}),
                b"{" + b" " * 200_000 + b"}",
            ]
            for body in bodies:
                status, reply = await post(f"{url}/offer", body)
                codes.append(status)
                assert "error" in reply
            async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as resp:
                health = await resp.json()
            pc, offer = await a_valid_offer()
            status, answer = await post(f"{url}/offer", json.dumps(offer))
            await pc.close()
            return codes, health, status, answer, server.offers_rejected
        finally:
            await runner.cleanup()

    codes, health, status, answer, rejected = asyncio.run(main())
    assert codes == [400] * 8
    assert rejected == 8
    assert health["ok"] and health["peers"] == 0
    assert status == 200 and answer["type"] == "answer" and "m=video" in answer["sdp"]
    assert hub.sessions() == []


def test_token_is_required_when_configured(tiny_runtime) -> None:
    hub = make_hub(tiny_runtime)

    async def main():
        server, runner, url = await start_server(hub, token="s3cret")
        try:
            pc, offer = await a_valid_offer()
            body = json.dumps(offer)
            no_token = (await post(f"{url}/offer", body))[0]
            wrong = (await post(f"{url}/offer", body, {"Authorization": "Bearer nope"}))[0]
            wrong_q = (await post(f"{url}/offer?token=nope", body))[0]
            ok_header = (await post(f"{url}/offer", body, {"Authorization": "Bearer s3cret"}))[0]
            await pc.close()
            pc2, offer2 = await a_valid_offer()
            ok_query = (await post(f"{url}/offer?token=s3cret", json.dumps(offer2)))[0]
            await pc2.close()
            return no_token, wrong, wrong_q, ok_header, ok_query, server.url()
        finally:
            await runner.cleanup()

    no_token, wrong, wrong_q, ok_header, ok_query, page_url = asyncio.run(main())
    assert (no_token, wrong, wrong_q) == (401, 401, 401)
    assert (ok_header, ok_query) == (200, 200)
    assert page_url.endswith("/") and "s3cret" not in page_url  # never in a logged URL


def test_bound_beyond_loopback_without_token_generates_one(tiny_runtime) -> None:
    server = WebRtcServer(make_hub(tiny_runtime), ServerConfig(host="0.0.0.0", port=0))
    assert server.token and len(server.token) >= 16
    assert WebRtcServer(make_hub(tiny_runtime), ServerConfig()).token is None


def test_peer_limit_returns_503(tiny_runtime) -> None:
    hub = make_hub(tiny_runtime)

    async def main():
        _server, runner, url = await start_server(hub, max_peers=1)
        try:
            pc1, offer1 = await a_valid_offer()
            first = (await post(f"{url}/offer", json.dumps(offer1)))[0]
            pc2, offer2 = await a_valid_offer()
            second = (await post(f"{url}/offer", json.dumps(offer2)))[0]
            await pc1.close()
            await pc2.close()
            return first, second
        finally:
            await runner.cleanup()

    first, second = asyncio.run(main())
    assert (first, second) == (200, 503)
    assert hub.sessions() == []


def test_viewer_commands_are_registered_in_fesnet_spot() -> None:
    from fesnet.realtime.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["webrtc-server", "--host", "0.0.0.0", "--max-peers", "2"])
    assert (args.command, args.host, args.max_peers, args.port) == (
        "webrtc-server",
        "0.0.0.0",
        2,
        8765,
    )
    args = parser.parse_args(["serve", "--token", "t"])
    assert (args.command, args.host, args.token, args.port) == ("serve", "127.0.0.1", "t", 7860)
    args = parser.parse_args(["remote-camera", "clip.mp4", "--loop"])
    assert (args.command, args.source, args.loop) == ("remote-camera", "clip.mp4", True)
