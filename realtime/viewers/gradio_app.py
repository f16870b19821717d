"""The Gradio live viewer (``fesnet-spot serve``).

The browser's webcam reaches the spotter over WebRTC, not through Gradio's own streaming webcam
(which delivers ~18 FPS without capture timestamps): a ``gr.HTML`` component's ``js_on_load``
runs getUserMedia + RTCPeerConnection and signals through the component's async server function
``offer``, so aiortc runs on Gradio's own event loop (static/gradio_camera.js). Frames go
latest-only into a :class:`~fesnet.realtime.viewers.hub.LiveSession`; the model runs on that
session's pipeline thread, never on the loop.

The page also replays an uploaded video or the bundled sample clip as if it were a camera (no
webcam needed), and shows for the current session of this browser tab: the aligned face crop, a
timeline of the committed scores with the detected intervals shaded and the merger thresholds in
force (a ``gr.Timer`` redraws it), the event log read as a result (each expression once; see
:func:`.display.event_log`), frame rate and latency, and an export of every event as JSONL.

Access: bound to 127.0.0.1 by default; bound elsewhere, the app asks for the access token
(Gradio's login form: any user name, the token as password), which also guards ``offer``.
Every request passes :class:`RequestGuard` (the rules of :mod:`.access`: no cross-site requests,
no foreign Host names on loopback). No analytics: Gradio's are off, uploads are limited in size,
and the app's temporary files are deleted when it stops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from fesnet.realtime.exitcodes import BAD_INPUT, Stopped
from fesnet.realtime.privacy import disable_telemetry
from fesnet.realtime.sample_clip import SAMPLE_CLIP

from . import access
from .access import GRADIO_PORT, MAX_FRAME_PIXELS, MAX_UPLOAD_MB
from .display import (
    CROP_DISPLAY_PX,
    crop_image,
    event_log,
    panel,
    stats_markdown,
    timeline_figure,
    timeline_key,
)
from .hub import HubFull, LiveSession, SpotHub
from .request_guard import RequestGuard
from .rtc import OfferError, RtcPeer, parse_offer

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = GRADIO_PORT
MAX_TABS = 256  # tabs remembered; API clients never send the unload that forgets one

CSS = """
.fes-camera video, .fes-camera .fes-replay { display: block; width: 100%; max-width: 640px;
  background: #000; border-radius: 6px; }
.fes-camera video[hidden], .fes-camera .fes-replay[hidden], .fes-box[hidden] { display: none; }
.fes-frame { position: relative; display: inline-block; width: 100%; max-width: 640px; }
.fes-box { position: absolute; border: 2px solid #3cdc50; border-radius: 3px;
  pointer-events: none; }
.fes-overlay { position: absolute; left: 6px; bottom: 8px; padding: 2px 6px; font: 12px monospace;
  background: rgba(0,0,0,.6); border-radius: 4px; }
.fes-overlay, .fes-overlay div { color: #fff !important; }
.fes-buttons { margin-bottom: 6px; display: flex; gap: 8px; align-items: center; }
.fes-buttons button { padding: 4px 12px; border-radius: 6px; border: 1px solid #888; }
.fes-status { font: 12px monospace; color: #888; }
"""


@dataclass
class TabState:
    """What one browser tab (Gradio session) is watching."""

    peer: RtcPeer | None = None
    live: LiveSession | None = None  # the current (or last) session: a camera or a replay
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one start/stop at a time
    plot_key: Any = None  # what the timeline showed when it was last drawn


class GradioViewer:
    """The app's state across tabs: one hub (one engine), one :class:`TabState` per tab.

    Every session a tab starts is closed exactly once, on whichever path comes first: Stop, a
    new replay or camera in the same tab, the tab closing (unload), the tab being forgotten
    (at most ``max_tabs`` are remembered, least recently used first), or the app closing.
    A session that ends by itself (a replay reached its end) gives its slot back at once
    (SpotHub reaps it); the tab keeps it to show and export its events."""

    def __init__(
        self,
        hub: SpotHub,
        sample_clip: Path | None = SAMPLE_CLIP,
        max_tabs: int = MAX_TABS,
        max_frame_pixels: int = MAX_FRAME_PIXELS,
        ice_addresses: list[str] | None = None,
    ) -> None:
        self.hub = hub
        self.ice_addresses = ice_addresses  # None: every interface (access.ice_addresses)
        has_clip = sample_clip is not None and sample_clip.is_file()
        self.sample_clip = sample_clip if has_clip else None
        self.max_tabs = max_tabs
        self.max_frame_pixels = max_frame_pixels
        self.tabs: collections.OrderedDict[str, TabState] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._export_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def export_dir(self) -> Path:
        """Where exports are written; created on the first export, deleted by :meth:`close`."""
        with self._lock:
            if self._export_dir is None:
                self._export_dir = tempfile.TemporaryDirectory(prefix="fesnet-events-")
            return Path(self._export_dir.name)

    def tab(self, session_hash: str | None) -> TabState:
        key = session_hash or "-"
        with self._lock:
            tab = self.tabs.get(key)
            if tab is not None:
                self.tabs.move_to_end(key)
                return tab
            tab = self.tabs[key] = TabState()
            evicted = []
            while len(self.tabs) > self.max_tabs:
                evicted.append(self.tabs.popitem(last=False)[1])
        for old in evicted:
            self._discard(old)
        return tab

    def _discard(self, tab: TabState) -> None:
        """Close a forgotten tab's session (from any thread)."""
        if tab.peer is not None:
            loop = tab.peer.loop
            if loop is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(tab.peer.close(), loop)
        elif tab.live is not None:
            threading.Thread(target=tab.live.close, name="tab-close", daemon=True).start()

    def close(self) -> None:
        """End every tab's session and delete the app's temporary files."""
        with self._lock:
            tabs = list(self.tabs.values())
            self.tabs.clear()
            export, self._export_dir = self._export_dir, None
        for tab in tabs:
            if tab.live is not None:
                tab.live.close()
        if export is not None:
            export.cleanup()

    # -- server functions (run on Gradio's event loop) -----------------------------------------
    @staticmethod
    async def _server_fn_session(request: Any) -> str | None:
        """The tab of a server-function call. Gradio hands server functions a request without
        ``session_hash``; the hash is in the JSON body Gradio already parsed (Starlette caches
        it on the request object, so reading it again costs nothing)."""
        if request is None:
            return None
        sh = getattr(request, "session_hash", None)
        if sh:
            return sh
        raw = getattr(request, "request", request)
        try:
            body = await raw.json()
        except Exception:  # not a JSON body: no tab to bind to
            return None
        return body.get("session_hash") if isinstance(body, dict) else None

    async def offer(self, payload: Any, request: Any) -> dict[str, Any]:
        """Signalling: the page's SDP offer -> the answer (``{"error": ...}`` on a bad offer)."""
        tab = self.tab(await self._server_fn_session(request))
        async with tab.lock:
            await self._stop_tab(tab)
            try:
                offer = parse_offer(payload)
                peer = RtcPeer(self.hub, prefix="cam", max_frame_pixels=self.max_frame_pixels,
                               ice_addresses=self.ice_addresses)
                answer = await peer.accept(offer)
            except (OfferError, HubFull) as e:
                return {"error": str(e)}
            except Exception as e:  # a bad offer must never break the app
                logger.warning("offer failed: %s: %s", type(e).__name__, e)
                return {"error": f"offer failed: {type(e).__name__}"}
            tab.peer, tab.live = peer, peer.session
            return {"sdp": answer.sdp, "type": answer.type, "stream": peer.id}

    async def view(self, payload: Any, request: Any) -> dict[str, Any]:
        """What the page's video panel shows (static/gradio_camera.js polls it): the session's
        stats and newest event line, the tracked face's box and, for a replay, its newest frame
        (a JPEG ``data:`` URL, only when it is not the ``seen`` one the page already shows)."""
        tab = self.tab(await self._server_fn_session(request))
        live = tab.live
        if live is None:
            return {"mode": "none"}
        seen = payload.get("seen") if isinstance(payload, dict) else None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, panel, live, seen)

    async def hangup(self, payload: Any, request: Any) -> dict[str, Any]:
        tab = self.tab(await self._server_fn_session(request))
        async with tab.lock:
            await self._stop_tab(tab)
        return {"ok": True}

    async def _stop_tab(self, tab: TabState) -> None:
        """Close the tab's session, whether it still runs or has ended (closing is idempotent,
        so a session already closed elsewhere costs nothing). The tab keeps it for display and
        export. Call with ``tab.lock`` held."""
        peer, tab.peer = tab.peer, None
        if peer is not None:
            await peer.finish_stream()
            await peer.close()
        if tab.live is not None and not tab.live.closed:
            await asyncio.get_running_loop().run_in_executor(None, tab.live.close)

    # -- Gradio events ---------------------------------------------------------------------------
    async def replay(self, path: str | None, request: Any) -> str:
        """Replay a video file like a camera (the uploaded one, or the sample clip)."""
        tab = self.tab(request.session_hash if request is not None else None)
        if not path:
            return "no video: upload one first (or play the sample clip)"
        async with tab.lock:
            await self._stop_tab(tab)
            loop = asyncio.get_running_loop()
            try:
                live = await loop.run_in_executor(None, self.hub.open_file, path, "live", "replay")
            except HubFull as e:
                return f"busy: {e}"
            except Exception as e:  # unreadable upload: say so, keep the app alive
                return f"cannot replay {Path(path).name}: {e}"
            tab.live = live
            return f"replaying {Path(path).name} as {live.id}"

    async def replay_sample(self, request: Any) -> str:
        if self.sample_clip is None:
            return "the sample clip is not bundled in this installation"
        return await self.replay(str(self.sample_clip), request)

    async def stop(self, request: Any) -> str:
        tab = self.tab(request.session_hash if request is not None else None)
        async with tab.lock:
            await self._stop_tab(tab)
        return "stopped"

    def skip_calibration(self, request: Any) -> str:
        tab = self.tab(request.session_hash if request is not None else None)
        if tab.live is not None and tab.live.skip_phase():
            return "calibration skipped: the base thresholds apply"
        return "no calibration running"

    def export(self, request: Any) -> str | None:
        tab = self.tab(request.session_hash if request is not None else None)
        if tab.live is None:
            return None
        path = self.export_dir / f"fesnet-events-{tab.live.id}.jsonl"
        tab.live.export_events(path)
        return str(path)

    def tick(self, request: Any) -> tuple[Any, str, str]:
        """Fast refresh: (aligned crop, stats line, event log)."""
        tab = self.tab(request.session_hash if request is not None else None)
        live = tab.live
        if live is None:
            return None, "no stream: start the webcam, upload a video, or play the sample clip", ""
        view = live.view()
        return crop_image(view.latest_crop), stats_markdown(live), event_log(live.events())

    def tick_plot(self, request: Any) -> Any:
        """The timeline, redrawn only when there is something new to show (``gr.skip()``
        otherwise: an idle tab costs no drawing)."""
        tab = self.tab(request.session_hash if request is not None else None)
        key = timeline_key(tab.live)
        if key == tab.plot_key:
            return gr.skip()
        tab.plot_key = key
        return timeline_figure(tab.live)

    def unload(self, request: Any) -> None:
        key = request.session_hash if request is not None else None
        with self._lock:
            tab = self.tabs.pop(key or "-", None)
        if tab is None:
            return
        if tab.peer is not None:
            loop = tab.peer.loop
            if loop is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(tab.peer.close(), loop)
        elif tab.live is not None:
            tab.live.close()

    # -- layout --------------------------------------------------------------------------------
    def handlers(self) -> dict[str, Any]:
        """The functions Gradio calls, by name. Their ``gr.Request`` annotations must resolve
        from this module's globals (they are strings under ``from __future__ import
        annotations``), hence gradio at the top."""
        viewer = self

        async def offer(payload: dict, request: gr.Request) -> dict:
            return await viewer.offer(payload, request)

        async def hangup(payload: dict, request: gr.Request) -> dict:
            return await viewer.hangup(payload, request)

        async def view(payload: dict, request: gr.Request) -> dict:
            return await viewer.view(payload, request)

        async def replay(path: str | None, request: gr.Request) -> str:
            return await viewer.replay(path, request)

        async def replay_sample(request: gr.Request) -> str:
            return await viewer.replay_sample(request)

        async def stop(request: gr.Request) -> str:
            return await viewer.stop(request)

        def export(request: gr.Request) -> str | None:
            return viewer.export(request)

        def skip_calibration(request: gr.Request) -> str:
            return viewer.skip_calibration(request)

        def tick(request: gr.Request) -> tuple[Any, str, str]:
            return viewer.tick(request)

        def tick_plot(request: gr.Request) -> Any:
            return viewer.tick_plot(request)

        def unload(request: gr.Request) -> None:
            viewer.unload(request)

        fns = (offer, hangup, view, replay, replay_sample, stop, export, skip_calibration, tick,
               tick_plot, unload)
        return {fn.__name__: fn for fn in fns}

    def build(self, timer_s: float = 0.5, plot_timer_s: float = 1.0) -> Any:
        h = self.handlers()
        # No analytics; Gradio's cache of uploaded videos (faces) is emptied hourly of files
        # older than an hour (and, per Gradio's documentation, when the server restarts).
        with gr.Blocks(
            title="FESNet live spotter", analytics_enabled=False, delete_cache=(3600, 3600)
        ) as demo:
            gr.Markdown(
                "## FESNet live spotter\nMicro- (ME) and macro-expression (MaE) spotting on a "
                "live webcam (WebRTC), an uploaded video, or the bundled sample clip."
            )
            with gr.Row():
                with gr.Column(scale=3):
                    gr.HTML(
                        value=(STATIC / "gradio_camera.html").read_text(encoding="utf-8"),
                        js_on_load=(STATIC / "gradio_camera.js").read_text(encoding="utf-8"),
                        server_functions=[h["offer"], h["hangup"], h["view"]],
                        elem_id="fesnet-camera",
                    )
                    with gr.Row():
                        upload = gr.File(
                            label="Video to replay", file_types=["video"], type="filepath",
                            height=100,
                        )
                        with gr.Column():
                            replay_btn = gr.Button("Replay uploaded video")
                            sample_btn = gr.Button(
                                "Play sample clip", interactive=self.sample_clip is not None
                            )
                            stop_btn = gr.Button("Stop", elem_id="fesnet-stop")
                    status = gr.Markdown(elem_id="fesnet-status")
                with gr.Column(scale=2):
                    crop = gr.Image(
                        label="Aligned face (112x112, model input)", height=CROP_DISPLAY_PX,
                        interactive=False, elem_id="fesnet-crop",
                    )
                    stats = gr.Markdown(elem_id="fesnet-stats")
                    skip_btn = gr.Button(
                        "Skip calibration", size="sm",
                        visible=self.hub.config.camera_phase is not None,
                    )
                    export_btn = gr.Button("Export events (JSONL)")
                    export_file = gr.File(label="Session events", elem_id="fesnet-export")
            plot = gr.Plot(label="Live timeline", elem_id="fesnet-timeline")
            log = gr.Textbox(
                label="Events (newest first)", lines=10, max_lines=10, interactive=False,
                elem_id="fesnet-events",
            )

            timer = gr.Timer(timer_s)
            timer.tick(h["tick"], None, [crop, stats, log], show_progress="hidden",
                       concurrency_limit=None)
            plot_timer = gr.Timer(plot_timer_s)
            plot_timer.tick(h["tick_plot"], None, plot, show_progress="hidden",
                            concurrency_limit=None)
            replay_btn.click(h["replay"], upload, status)
            sample_btn.click(h["replay_sample"], None, status)
            stop_btn.click(h["stop"], None, status)
            export_btn.click(h["export"], None, export_file)
            skip_btn.click(h["skip_calibration"], None, status)
            demo.unload(h["unload"])
        return demo


# -- running -----------------------------------------------------------------------------------
def launch(
    hub: SpotHub,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    block: bool = True,
    allowed_origins: tuple[str, ...] = (),
    max_upload_mb: int = MAX_UPLOAD_MB,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    ice_all_interfaces: bool = False,
) -> tuple[Any, GradioViewer, str | None]:
    """Build and launch the app; returns (demo, viewer, token in force). Raises OSError when
    the port cannot be bound (the viewer is closed again then)."""
    from starlette.middleware import Middleware

    disable_telemetry()
    access.redact_access_logs()
    ice = access.ice_addresses(host, ice_all_interfaces)
    viewer = GradioViewer(hub, max_frame_pixels=max_frame_pixels, ice_addresses=ice)
    demo = viewer.build()
    token = access.resolve_token(host, token)
    auth = None
    if token is not None:
        expected = token

        def auth(user: str, password: str) -> bool:
            return access.token_ok(expected, password)

    guard = Middleware(RequestGuard, bound_host=host, allowed_origins=allowed_origins)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            auth_message="Enter any user name and the access token as the password.",
            prevent_thread_lock=not block,
            css=CSS,
            show_error=True,
            max_file_size=f"{max_upload_mb}mb",
            app_kwargs={"middleware": [guard]},
        )
    except BaseException:
        viewer.close()
        raise
    return demo, viewer, token


def serve_gradio(
    hub: SpotHub,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    allowed_origins: tuple[str, ...] = (),
    max_upload_mb: int = MAX_UPLOAD_MB,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    ice_all_interfaces: bool = False,
) -> int:
    """Run the app until SIGINT / SIGTERM (exit code 0; 2 if the port cannot be bound). The
    hub's sessions are closed and the temporary files deleted on the way out."""
    resolved = access.resolve_token(host, token)
    if resolved and not token:
        print(f"access token (generated; the login password): {resolved}")
    demo = viewer = None
    try:
        demo, viewer, _ = launch(
            hub, host, port, resolved, block=False, allowed_origins=allowed_origins,
            max_upload_mb=max_upload_mb, max_frame_pixels=max_frame_pixels,
            ice_all_interfaces=ice_all_interfaces,
        )
        while True:
            time.sleep(0.5)
    except (KeyboardInterrupt, Stopped):
        pass
    except OSError as e:
        print(f"fesnet-spot: error: cannot listen on {host}:{port}: {e.strerror or e}",
              file=sys.stderr)
        return BAD_INPUT
    finally:
        if demo is not None:
            demo.close(verbose=False)
        if viewer is not None:
            viewer.close()
        hub.close_all()
    return 0
