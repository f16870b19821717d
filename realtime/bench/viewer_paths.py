"""Measure (and screenshot) both viewer paths in headless Chromium with a fake camera.

``python -m fesnet.realtime.bench.viewer_paths --seconds 20 --screenshots docs/screenshots``

Paths measured, each for ``--seconds`` of streaming a real face clip (the bundled sample clip as a
Chromium fake camera, 640x480 at 30 FPS):

- ``gradio``: the Gradio app's webcam component (WebRTC into aiortc on Gradio's loop);
- ``client-page``: the WebRTC server's static client page;
- ``python-client``: the Python remote camera against the WebRTC server (no browser).

Reported per path: frames/s arriving at the server, frames/s the spotter processed, frames
dropped by the latest-only slot, and latency p50/p95 from a frame's arrival to its window
scores (every window) and to an emitted expression event. The helpers here are also what the
browser tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fesnet.realtime.sample_clip import SAMPLE_CLIP
from fesnet.realtime.tier_engine import describe

from ..viewers.hub import SpotHub
from .fakecam import real_face_frames, write_y4m

CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str | None:
    for path in (CHROMIUM, shutil.which("chromium") or "", shutil.which("chromium-browser") or ""):
        if path and os.access(path, os.X_OK):
            return path
    return None


def chromium_args(y4m: str | Path) -> list[str]:
    """Fake camera from ``y4m``, auto-accepted permission, WebRTC over loopback."""
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        "--no-sandbox",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]


def make_fake_camera(path: str | Path, seconds: float = 4.0, size: tuple[int, int] = (640, 480)):
    """A y4m of a real face (sample clip, else an animated face photo) for Chromium."""
    return write_y4m(real_face_frames(int(seconds * 30), size), path, fps=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Gather ICE candidates on 127.0.0.1 only (tests and measurements on one machine)."""
    from unittest import mock

    import aioice.ice

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    with mock.patch.object(aioice.ice, "get_host_addresses", loopback):
        yield


@contextlib.contextmanager
def webrtc_server_thread(hub: SpotHub, **config: Any) -> Iterator[tuple[Any, str]]:
    """Run a :class:`WebRtcServer` on its own event loop thread; yields (server, base URL)."""
    from ..viewers.webrtc_server import ServerConfig, WebRtcServer

    loop = asyncio.new_event_loop()
    server = WebRtcServer(hub, ServerConfig(port=0, **config))
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["runner"] = loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="webrtc-server", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("WebRTC server did not start")
    try:
        yield server, f"http://127.0.0.1:{server.port}"
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def wait_for(page: Any, js: str, timeout_s: float = 30.0, poll_s: float = 0.25) -> Any:
    """Poll a JS expression until it is truthy; returns its value (TimeoutError otherwise)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(js)
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out waiting for {js}")


def session_numbers(hub: SpotHub, stats: dict[str, Any] | None) -> dict[str, Any]:
    """Latency percentiles of the live session(s) over the whole session (the stats' histogram,
    within 1 %) plus the last stats message."""
    out: dict[str, Any] = dict(stats or {})
    for s in hub.sessions():
        summary = s.run.summary()["stages"]
        for stage, key in (("frame_score_latency", "score"), ("event_latency", "event")):
            st = summary.get(stage)
            if st:
                out[f"{key}_latency_p50_ms"] = round(st["p50_ms"], 1)
                out[f"{key}_latency_p95_ms"] = round(st["p95_ms"], 1)
                out[f"{key}_latency_n"] = st["n"]
    return out


@contextlib.contextmanager
def gradio_page(pw: Any, hub: SpotHub, y4m: Path) -> Iterator[Any]:
    """The Gradio app on a free port and a Chromium page on it (fake camera ``y4m``); closed,
    with the hub's sessions, on the way out."""
    from ..viewers.gradio_app import launch

    port = free_port()
    demo, _viewer, _ = launch(hub, port=port, block=False)
    browser = pw.chromium.launch(executable_path=chromium_path(), args=chromium_args(y4m))
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/")
        yield page
    finally:
        browser.close()
        demo.close()
        hub.close_all()


def measure_gradio(pw: Any, hub: SpotHub, y4m: Path, seconds: float, shot: Path | None) -> dict:
    with gradio_page(pw, hub, y4m) as page:
        page.click(".fes-start")
        wait_for(page, "window.fesnetCamera && window.fesnetCamera.stats")
        time.sleep(seconds)
        numbers = session_numbers(hub, page.evaluate("window.fesnetCamera.stats"))
        if shot is not None:
            page.screenshot(path=str(shot), full_page=True)
        page.click(".fes-stop")
        return numbers


def measure_gradio_replay(
    pw: Any, hub: SpotHub, y4m: Path, seconds: float, shot: Path | None
) -> dict:
    """The Gradio page replaying the sample clip (no camera): it plays in the video panel."""
    with gradio_page(pw, hub, y4m) as page:
        page.get_by_role("button", name="Play sample clip").click()
        wait_for(page, "window.fesnetCamera.panel.mode === 'replay' && window.fesnetCamera.stats")
        time.sleep(seconds)
        numbers = session_numbers(hub, page.evaluate("window.fesnetCamera.stats"))
        numbers["frames_shown"] = page.evaluate("window.fesnetCamera.panel.frames")
        if shot is not None:
            page.screenshot(path=str(shot), full_page=True)
        return numbers


def measure_client_page(
    pw: Any, hub: SpotHub, y4m: Path, seconds: float, shot: Path | None
) -> dict:
    with webrtc_server_thread(hub) as (_server, url):
        browser = pw.chromium.launch(executable_path=chromium_path(), args=chromium_args(y4m))
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 620})
            page.goto(f"{url}/?autostart=1")
            wait_for(page, "window.fesnet && window.fesnet.stats")
            time.sleep(seconds)
            numbers = session_numbers(hub, page.evaluate("window.fesnet.stats"))
            if shot is not None:
                page.screenshot(path=str(shot), full_page=True)
            return numbers
        finally:
            browser.close()


def measure_python_client(hub: SpotHub, clip: Path, seconds: float) -> dict:
    from ..viewers.remote_client import RemoteCamera, SourceTrack

    with webrtc_server_thread(hub) as (_server, url):
        numbers: dict[str, Any] = {}

        async def go() -> None:
            cam = RemoteCamera(url, SourceTrack(str(clip), loop=True))
            await cam.connect()
            await asyncio.sleep(seconds)
            numbers.update(session_numbers(hub, cam.result.stats[-1] if cam.result.stats else {}))
            await cam.finish()
            await cam.close()

        asyncio.run(go())
        return numbers


def main(argv: list[str] | None = None) -> int:
    from ..viewers.commands import add_model_arguments, make_hub

    parser = argparse.ArgumentParser(description=__doc__)
    add_model_arguments(parser)  # the viewers' own options: the same model, stride, calibration
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for PNGs")
    parser.add_argument("--paths", default="gradio,gradio-replay,client-page,python-client")
    parser.add_argument("--workdir", type=Path, default=Path("runs/viewers"))
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    if chromium_path() is None:
        print("chromium not found (apt-get install chromium)")
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    y4m = make_fake_camera(args.workdir / "camera.y4m", seconds=10.0)
    hub = make_hub(args, max_sessions=4)
    shots = args.screenshots
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "backend": describe(hub.model.engine),
    }
    paths = args.paths.split(",")
    with loopback_ice():
        if "python-client" in paths:
            results["python-client"] = measure_python_client(hub, SAMPLE_CLIP, args.seconds)
        with sync_playwright() as pw:
            if "gradio" in paths:
                results["gradio"] = measure_gradio(
                    pw, hub, y4m, args.seconds, shots / "gradio_app.png" if shots else None
                )
            if "gradio-replay" in paths:
                results["gradio-replay"] = measure_gradio_replay(
                    pw, hub, y4m, min(args.seconds, 8.0),
                    shots / "gradio_replay.png" if shots else None,
                )
            if "client-page" in paths:
                results["client-page"] = measure_client_page(
                    pw, hub, y4m, args.seconds, shots / "webrtc_client.png" if shots else None
                )
    results["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
