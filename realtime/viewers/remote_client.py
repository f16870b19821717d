"""A Python "remote camera" for the WebRTC server (``fesnet-spot remote-camera``).

Streams a video file (replayed at its own frame rate, optionally looped) or a local webcam to
``POST /offer`` of :mod:`~fesnet.realtime.viewers.webrtc_server`, and receives the spotter's
events on the data channel (printed as JSON Lines, one per event).

The video track is a :class:`SourceTrack`: a ``VideoStreamTrack`` that takes the newest frame of a
:mod:`fesnet.realtime.sources` source (files paced at their PTS, cameras latest-only) on an
executor thread, so decoding never blocks the event loop, and stamps it with a 90 kHz PTS that keeps
increasing across loops of a file (MediaPlayer(loop=True) restarts PTS at 0 on every loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from aiortc import VideoStreamTrack

from fesnet.realtime import exitcodes
from fesnet.realtime.sources import Source, SourceError, SourceLost, open_source

from .rtc import rtc_configuration

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000


class SourceTrack(VideoStreamTrack):
    """Frames of a fesnet source as an aiortc video track (ends with the source unless looped)."""

    def __init__(self, spec: str, loop: bool = False, max_frames: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.loop = loop
        self.max_frames = max_frames
        self.frames_sent = 0
        self._source: Source = self._open()
        self._offset_s = 0.0
        self._last_pts_s = 0.0
        self._frame_s = 1.0 / 30.0

    def _open(self) -> Source:
        src = open_source(self.spec, pace="live", stream="remote")
        if src.fps:
            self._frame_s = 1.0 / src.fps
        return src.start()

    def _next(self) -> Any:
        """Blocking: the next frame (reopening a looped file at its end), or None at the end."""
        frame = self._source.read()
        if frame is None and self.loop and self.readyState == "live":
            self._source.stop()
            self._offset_s = self._last_pts_s + self._frame_s
            self._source = self._open()
            if self.readyState != "live":  # stop() ran meanwhile: do not leak the new reader
                self._source.stop()
                return None
            frame = self._source.read()
        return frame

    async def recv(self) -> Any:
        import av
        from aiortc.mediastreams import MediaStreamError

        if self.max_frames is not None and self.frames_sent >= self.max_frames:
            self.stop()
            raise MediaStreamError
        frame = await asyncio.get_running_loop().run_in_executor(None, self._next)
        if frame is None:
            self.stop()
            raise MediaStreamError
        pts_s = self._offset_s + frame.pts_s
        self._last_pts_s = pts_s
        out = av.VideoFrame.from_ndarray(frame.image, format="bgr24")
        out.pts = round(pts_s * VIDEO_CLOCK)
        out.time_base = Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return out

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(SourceError, SourceLost):
            self._source.stop()


@dataclass
class RemoteResult:
    """What a remote camera saw: the server's events and stats messages, frames sent."""

    stream: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    frames_sent: int = 0
    connected_s: float | None = None  # time from offer to the connection being up

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


class RemoteCamera:
    """One connection to a WebRTC server. ``await cam.connect()``, then ``await cam.run(s)`` or
    ``await cam.wait_ended()``; ``await cam.close()`` leaves (the server keeps serving others)."""

    def __init__(
        self,
        server_url: str,
        track: Any,
        token: str | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.track = track
        self.token = token
        self.on_message = on_message
        self.result = RemoteResult()
        self.pc: Any = None
        self.channel: Any = None
        self._ended = asyncio.Event()
        self._server_done = asyncio.Event()

    async def connect(self, timeout_s: float = 20.0) -> RemoteResult:
        import aiohttp
        from aiortc import RTCPeerConnection, RTCSessionDescription

        t0 = time.monotonic()
        self.pc = pc = RTCPeerConnection(rtc_configuration())
        self.channel = channel = pc.createDataChannel("events")
        channel.on("message", self._on_message)
        pc.addTrack(self.track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._ended.set()

        @self.track.on("ended")
        def on_track_ended() -> None:
            self._ended.set()

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.server_url}/offer", json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp,
        ):
            answer = await resp.json(content_type=None)
            if resp.status != 200:
                await pc.close()
                raise ConnectionError(f"server refused the offer ({resp.status}): {answer}")
        self.result.stream = answer.get("stream")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        deadline = time.monotonic() + timeout_s
        while pc.connectionState != "connected":
            if time.monotonic() > deadline or pc.connectionState in ("failed", "closed"):
                await pc.close()
                raise ConnectionError(f"connection not established ({pc.connectionState})")
            await asyncio.sleep(0.05)
        self.result.connected_s = time.monotonic() - t0
        return self.result

    def _on_message(self, message: Any) -> None:
        try:
            msg = json.loads(message)
        except (TypeError, ValueError):
            logger.warning("non-JSON message on the events channel: %r", message)
            return
        if msg.get("type") == "end":
            self._server_done.set()
        elif msg.get("type") == "stats":
            self.result.stats.append(msg)
        else:
            self.result.events.append(msg)
        if self.on_message is not None:
            self.on_message(msg)

    async def wait_ended(self, timeout_s: float | None = None) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout_s)

    async def skip_calibration(self, timeout_s: float = 10.0) -> None:
        """Ask the server to skip this camera's neutral-baseline phase."""
        deadline = time.monotonic() + timeout_s
        while self.channel is None or self.channel.readyState != "open":
            if time.monotonic() > deadline:
                raise ConnectionError("the events channel did not open")
            await asyncio.sleep(0.05)
        self.channel.send(json.dumps({"type": "skip_calibration"}))

    async def finish(self, timeout_s: float = 10.0) -> None:
        """Tell the server the stream is over and wait for its last events (``{"type": "end"}``)."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps({"type": "end"}))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server_done.wait(), timeout_s)

    async def run(self, duration_s: float | None = None) -> RemoteResult:
        """Stream until the source ends (or ``duration_s``), collect the last events, close."""
        await self.wait_ended(duration_s)
        await self.finish()
        await self.close()
        return self.result

    async def close(self) -> None:
        self.result.frames_sent = getattr(self.track, "frames_sent", 0)
        self.track.stop()
        if self.pc is not None:
            await self.pc.close()


def remote_camera(args: argparse.Namespace) -> int:
    """Stream ``args.source`` to the server and print its events as JSON Lines."""

    def show(msg: dict[str, Any]) -> None:
        if msg.get("type") != "stats" or args.stats:
            print(json.dumps(msg, separators=(",", ":")), flush=True)

    async def go() -> RemoteResult:
        track = SourceTrack(args.source, loop=args.loop)
        cam = RemoteCamera(args.server, track, token=args.token, on_message=show)
        try:
            await cam.connect()
            print(f"# connected as {cam.result.stream}", file=sys.stderr)
            return await cam.run(args.duration)
        finally:
            # Also when the server cannot be reached: the file reader thread must end before
            # the interpreter does (a reader left inside OpenCV aborts the process at exit).
            await cam.close()

    import aiohttp

    url = urllib.parse.urlsplit(args.server)
    if url.scheme not in ("http", "https") or not url.hostname:
        print(f"fesnet-spot: error: --server {args.server!r} is not an http(s):// URL",
              file=sys.stderr)
        return exitcodes.BAD_INPUT
    try:
        result = asyncio.run(go())
    except SourceError as e:
        print(f"fesnet-spot: error: {e}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    except (ConnectionError, OSError, aiohttp.ClientError, asyncio.TimeoutError) as e:
        reason = str(e) or type(e).__name__
        print(f"fesnet-spot: error: cannot stream to {args.server}: {reason}", file=sys.stderr)
        return exitcodes.FAILED
    except KeyboardInterrupt:
        return exitcodes.stopped_by(signal.SIGINT)
    print(f"# sent {result.frames_sent} frames, got {len(result.events)} events", file=sys.stderr)
    return exitcodes.OK
