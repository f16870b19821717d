"""Both viewers in headless Chromium with a fake camera playing a real face (.y4m made at test
time from the bundled sample clip): the Gradio page's webcam reaches the spotter over WebRTC,
frames flow at the camera's rate and events show up; the WebRTC server's client page does the
same; the Gradio app replays the sample clip with no camera and exports the session's events.

A tiny random checkpoint stands in for the trained one (the tests are about the viewers); the
face events (``face_found``) come from the real face tracker, so they appear with any weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api")
pytest.importorskip("aiortc")

from fesnet.calibration.baseline import BaselineConfig, session_phase
from fesnet.realtime.bench import viewer_paths as measure
from fesnet.realtime.viewers.hub import HubConfig, SpotHub

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        measure.chromium_path() is None,
        reason="Debian chromium not installed (./dev setup installs it: apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def hub(tiny_runtime) -> Iterator[SpotHub]:
    camera_phase = session_phase(BaselineConfig(duration_s=1.0))  # cameras calibrate for 1 s
    hub = SpotHub.from_runtime(tiny_runtime, HubConfig(camera_phase=camera_phase))
    yield hub
    hub.close_all()


@pytest.fixture(scope="module")
def y4m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of a real face at 480x360, 30 FPS; Chromium loops it."""
    path = tmp_path_factory.mktemp("cam") / "face.y4m"
    return measure.make_fake_camera(path, seconds=2.0, size=(480, 360))


@pytest.fixture(scope="module")
def chromium(y4m: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with measure.loopback_ice(), sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=measure.chromium_path(), args=measure.chromium_args(y4m)
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def gradio_url(hub: SpotHub) -> Iterator[str]:
    from fesnet.realtime.viewers.gradio_app import launch

    port = measure.free_port()
    with measure.loopback_ice():
        demo, _viewer, token = launch(hub, port=port, block=False)
        assert token is None  # loopback: open
        yield f"http://127.0.0.1:{port}/"
        demo.close()


def test_gradio_webcam_over_webrtc(chromium, gradio_url: str, hub: SpotHub, tmp_path) -> None:
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(gradio_url)
        page.click(".fes-start")
        # Frames flow at the camera's rate and the face tracker's events reach the page.
        stats = measure.wait_for(
            page,
            "(() => { const s = window.fesnetCamera && window.fesnetCamera.stats;"
            " return s && s.frames_received >= 60 && window.fesnetCamera.events > 0 && s; })()",
            timeout_s=60,
        )
        assert page.evaluate("window.fesnetCamera.status") == "camera connected"
        assert stats["stream"].startswith("cam")
        assert stats["input_fps"] > 15, stats  # 30 FPS fake camera; a loaded CI box drops some
        assert stats["frames"] > 0 and stats["state"] == "tracking"
        # The timer-driven components show the same session: log, stats, aligned crop, timeline.
        log = measure.wait_for(
            page,
            "(() => { const t = document.querySelector('#fesnet-events textarea');"
            " return t && t.value.includes('face_found') && t.value; })()",
            timeout_s=20,
        )
        assert "face found" in log
        assert stats["stream"] in page.inner_text("#fesnet-stats")
        # The neutral-baseline phase and its result are shown (stats box and event log).
        measure.wait_for(
            page, "document.querySelector('#fesnet-stats').innerText.includes('calibrated:')", 30
        )
        assert "calibrated on" in page.input_value("#fesnet-events textarea")
        assert page.locator("#fesnet-crop img").count() == 1
        measure.wait_for(page, "!!document.querySelector('#fesnet-timeline img, "
                               "#fesnet-timeline svg, #fesnet-timeline canvas')")
        page.screenshot(path=str(tmp_path / "gradio.png"), full_page=True)
        # Export: a JSONL of this session's events.
        page.get_by_role("button", name="Export events (JSONL)").click()
        link = page.locator("#fesnet-export a").first
        link.wait_for(timeout=20_000)
        with page.expect_download() as dl:
            link.click()
        lines = Path(dl.value.path()).read_text().splitlines()
        events = [json.loads(line) for line in lines]
        assert any(e["type"] == "face_found" and e["stream"] == stats["stream"] for e in events)
        page.click(".fes-stop")
        measure.wait_for(page, "window.fesnetCamera.status === 'stopped'")
        deadline = time.monotonic() + 20
        while hub.sessions() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hub.sessions() == []  # hangup ended the session (flushed, thread joined)
    finally:
        page.close()


def test_gradio_replays_the_sample_clip_without_a_camera(
    chromium, gradio_url: str, tmp_path: Path
) -> None:
    """The replay plays in the video panel, where the webcam would: its frames, the tracked
    face's box over them and the overlay (spotter fps, face state, the newest event line)."""
    if not measure.SAMPLE_CLIP.is_file():
        pytest.skip("the sample clip is not bundled")
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(gradio_url)
        assert page.inner_text(".fes-overlay").strip() == "no stream"
        page.get_by_role("button", name="Play sample clip").click()
        measure.wait_for(
            page,
            "(() => { const t = document.querySelector('#fesnet-events textarea');"
            " return t && t.value.includes('face_found'); })()",
            timeout_s=60,
        )
        assert "replay" in page.inner_text("#fesnet-stats")
        panel = measure.wait_for(
            page,
            "(() => { const p = window.fesnetCamera.panel;"
            " return p.mode === 'replay' && p.frames >= 10 && p.box && p.event && p; })()",
            timeout_s=60,
        )
        x0, y0, x1, y1 = panel["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1  # a face, inside the frame
        assert page.is_hidden(".fes-camera video") and page.is_visible(".fes-replay")
        assert page.is_visible(".fes-box")
        size = page.evaluate("[document.querySelector('.fes-replay').naturalWidth,"
                             " document.querySelector('.fes-replay').naturalHeight]")
        assert size == [640, 480]  # the sample clip's own frames
        overlay = page.inner_text(".fes-overlay")
        assert "spotter" in overlay and "face tracking" in overlay
        page.screenshot(path=str(tmp_path / "replay.png"))
        page.click("#fesnet-stop")
        measure.wait_for(
            page, "document.querySelector('#fesnet-stats').innerText.includes('ended')", 30
        )
    finally:
        page.close()


def test_webrtc_client_page_against_the_server(chromium, hub: SpotHub, tmp_path) -> None:
    with measure.loopback_ice(), measure.webrtc_server_thread(hub) as (server, url):
        page = chromium.new_page(viewport={"width": 1100, "height": 620})
        try:
            page.goto(f"{url}/?autostart=1")
            stats = measure.wait_for(
                page,
                "(() => { const s = window.fesnet.stats;"
                " return s && s.frames_received >= 60 && window.fesnet.events > 0 && s; })()",
                timeout_s=60,
            )
            assert page.evaluate("window.fesnet.status") == "connection connected"
            assert stats["input_fps"] > 15, stats
            assert stats["state"] == "tracking"
            assert "face_found" in page.inner_text("#log")
            assert len(server.peers) == 1
            measure.wait_for(
                page,
                "(() => { const s = window.fesnet.stats;"
                " return s && s.calibration && s.calibration.phase === 'calibrated' && s; })()",
                timeout_s=30,
            )
            assert "calibrated: on" in page.inner_text("#stats")
            assert page.is_disabled("#skip")  # nothing left to skip
            page.screenshot(path=str(tmp_path / "client.png"), full_page=True)
        finally:
            page.close()


def test_gradio_requires_the_token_when_bound_beyond_loopback(hub: SpotHub) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    from fesnet.realtime.viewers.gradio_app import launch

    port = measure.free_port()
    demo, _viewer, token = launch(hub, host="0.0.0.0", port=port, block=False)
    try:
        assert token and len(token) >= 16  # generated
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/config", timeout=10)
        assert err.value.code == 401

        def login(password: str) -> int:
            data = urllib.parse.urlencode({"username": "me", "password": password}).encode()
            try:
                with urllib.request.urlopen(f"{base}/login", data=data, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert login("wrong") in (400, 401)
        assert login(token) == 200
        with pytest.raises(urllib.error.HTTPError) as err:  # the offer is guarded too
            req = urllib.request.Request(
                f"{base}/gradio_api/component_server", data=b"{}", method="POST",
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
    finally:
        demo.close()
