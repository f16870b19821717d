"""aiortc plumbing shared by the Gradio app and the standalone WebRTC server.

One :class:`RtcPeer` is one browser/phone/Python client: its video track is read latest-only
(``MediaRelay().subscribe(track, buffered=False)``: a slow consumer gets the newest frame, never a
backlog) and pushed into its own :class:`~fesnet.realtime.viewers.hub.LiveSession`; the session's
events go back as JSON on the peer's data channel, with a ``{"type": "stats"}`` message every
``stats_every_s``. Everything here runs on the event loop it was created on; the model runs on the
session's pipeline threads, and so does the conversion of each received frame to an image (the
loop hands the decoded video frame over as it is); blocking waits (joining those threads) go to
the default executor.

Timestamps: a frame's source time is its RTP timestamp (``frame.pts`` in ``frame.time_base``),
unwrapped across the 32-bit wrap and counted from the peer's first frame, so events are reported
in seconds since the camera started streaming. ``t_capture_ns`` is the arrival time here (the
sender's clock is not comparable), so latencies are measured from a frame's arrival.

ICE host candidates: a peer may be told the only addresses to gather on (``ice_addresses``; a
server bound to loopback gathers on loopback only: ``access.ice_addresses``). aioice reads the
machine's addresses through one module function, so :func:`_gather_only_on` routes that
function through a context variable that :meth:`RtcPeer.accept` sets while it gathers: peers
with and without a restriction can live on one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fesnet.realtime.sinks import event_to_json

from .access import MAX_FRAME_PIXELS, MAX_SDP_BYTES
from .hub import HubFull, LiveSession, SpotHub

logger = logging.getLogger(__name__)


def frame_to_bgr(frame: Any, max_pixels: int = MAX_FRAME_PIXELS) -> Any:
    """A decoded video frame -> (H, W, 3) uint8 BGR with at most ``max_pixels`` pixels.

    A peer chooses its own resolution: a 4K or 8K camera would otherwise cost ~24-100 MB per
    frame and 6-80 ms of conversion, and slow every other peer. The face the spotter needs is
    112x112 after alignment, so larger frames are scaled down (aspect kept, even sizes) in the
    same libswscale pass that converts them, which costs less than converting at full size.
    :class:`RtcPeer` hands this call to the session's align thread, never runs it on the loop."""
    w, h = int(frame.width), int(frame.height)
    if w * h <= max_pixels:
        return frame.to_ndarray(format="bgr24")
    scale = (max_pixels / (w * h)) ** 0.5
    tw, th = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
    small = frame.reformat(width=tw, height=th, format="bgr24", interpolation="FAST_BILINEAR")
    return small.to_ndarray()


_ICE_ADDRESSES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "fesnet_ice_addresses", default=None
)


def _gather_only_on(addresses: list[str] | None) -> contextvars.Token:
    """Host candidates gathered in this context come from ``addresses`` only (None: every
    interface, aioice's own choice). Returns the token to reset the context variable."""
    import aioice.ice

    machine = aioice.ice.get_host_addresses
    if not getattr(machine, "fesnet_restrictable", False):

        def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            only = _ICE_ADDRESSES.get()
            if only is None:
                return machine(use_ipv4, use_ipv6)
            return [a for a in only if (use_ipv6 if ":" in a else use_ipv4)]

        host_addresses.fesnet_restrictable = True  # type: ignore[attr-defined]
        aioice.ice.get_host_addresses = host_addresses
    return _ICE_ADDRESSES.set(addresses)


class OfferError(ValueError):
    """The client's offer is not a usable SDP offer (the HTTP layer answers 400)."""


def rtc_configuration() -> Any:
    """No ICE servers: the default contacts a public STUN server, which a LAN/loopback service
    does not need and an offline machine cannot reach."""
    from aiortc import RTCConfiguration

    return RTCConfiguration(iceServers=[])


def parse_offer(data: Any, max_sdp_bytes: int = MAX_SDP_BYTES) -> Any:
    """``{"sdp": str, "type": "offer"}`` -> RTCSessionDescription, or OfferError saying why.

    Only the shape is checked here; an SDP that aiortc cannot apply fails later in
    :meth:`RtcPeer.accept`, which also raises OfferError.
    """
    from aiortc import RTCSessionDescription

    if not isinstance(data, dict):
        raise OfferError("the offer must be a JSON object with 'sdp' and 'type'")
    sdp, kind = data.get("sdp"), data.get("type")
    if kind != "offer":
        raise OfferError(f"type must be 'offer', got {kind!r}")
    if not isinstance(sdp, str) or not sdp.strip():
        raise OfferError("sdp must be a non-empty string")
    if len(sdp.encode("utf-8", "replace")) > max_sdp_bytes:
        raise OfferError(f"sdp is larger than {max_sdp_bytes} bytes")
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError("sdp does not start with 'v=0'")
    if "m=video" not in sdp:
        raise OfferError("the offer has no video track (m=video)")
    return RTCSessionDescription(sdp=sdp, type="offer")


class RtpClock:
    """RTP timestamps (32-bit, wrapping) -> seconds since the first frame; None for a frame that
    goes back in time (a reordered or repeated frame, dropped by the caller)."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._ticks = 0

    def seconds(self, pts: int, time_base: float) -> float | None:
        if self._last is None:
            self._last = pts
            return 0.0
        delta = (pts - self._last) & 0xFFFFFFFF
        if delta >= 0x80000000 or delta == 0:
            return None
        self._last = pts
        self._ticks += delta
        return self._ticks * time_base


class RtcPeer:
    """One WebRTC peer bound to one live session."""

    def __init__(
        self,
        hub: SpotHub,
        prefix: str = "peer",
        stats_every_s: float = 1.0,
        on_closed: Callable[[RtcPeer], Awaitable[None] | None] | None = None,
        connect_timeout_s: float = 15.0,
        max_frame_pixels: int = MAX_FRAME_PIXELS,
        ice_addresses: list[str] | None = None,
    ) -> None:
        from aiortc import RTCPeerConnection

        self.hub = hub
        self.ice_addresses = ice_addresses
        self.max_frame_pixels = max_frame_pixels
        self.frames_downscaled = 0
        self.prefix = prefix
        self.stats_every_s = stats_every_s
        self.connect_timeout_s = connect_timeout_s
        self.on_closed = on_closed
        self.pc = RTCPeerConnection(rtc_configuration())
        self.session: LiveSession | None = None
        self.channel: Any = None
        self.frames_received = 0
        self.frames_skipped = 0
        self._tasks: set[asyncio.Task] = set()
        self._closing: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.first_frame_s: float | None = None
        self._finished = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the peer runs on (None before its offer was accepted)."""
        return self._loop

    @property
    def id(self) -> str:
        return self.session.id if self.session is not None else "(no session)"

    async def accept(self, offer: Any) -> Any:
        """Apply the offer, start a session, return the answer (RTCSessionDescription).

        Raises :class:`~fesnet.realtime.viewers.hub.HubFull` when no session slot is free and
        OfferError when aiortc cannot use the SDP; the peer is closed in both cases."""
        from aiortc.contrib.media import MediaRelay

        self._loop = asyncio.get_running_loop()
        relay = MediaRelay()
        pc = self.pc
        video: list[Any] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video" and not video:
                video.append(relay.subscribe(track, buffered=False))

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self.channel = channel
            channel.on("message", self._on_message)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            logger.info("peer %s: connection %s", self.id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                self.close_soon()

        gathering = _gather_only_on(self.ice_addresses)
        try:
            await pc.setRemoteDescription(offer)
            if not video:
                raise OfferError("the offer has no video track")
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)  # gathers the candidates the answer carries
            # Only a usable offer costs a session (a face tracker and a worker thread).
            self.session = await self._loop.run_in_executor(None, self.hub.open_push, self.prefix)
        except Exception as e:  # malformed SDP surfaces as many exception types
            await self.close()
            if isinstance(e, (OfferError, HubFull)):
                raise
            raise OfferError(f"cannot use this offer: {type(e).__name__}: {e}") from e
        finally:
            _ICE_ADDRESSES.reset(gathering)
        self.session.listen_async(self._loop, self._send_event)
        self._spawn(self._read_video(video[0]))
        self._spawn(self._send_stats())
        self._spawn(self._drop_if_never_connected())
        return pc.localDescription

    async def _drop_if_never_connected(self) -> None:
        """An answered offer whose client never completes ICE would hold a peer slot and a
        session until ICE gives up (~60 s with aiortc): close it after ``connect_timeout_s``."""
        await asyncio.sleep(self.connect_timeout_s)
        if self.pc.connectionState != "connected":
            logger.info("peer %s: not connected after %.0f s; closing", self.id,
                        self.connect_timeout_s)
            self.close_soon()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_video(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        clock = RtpClock()
        session = self.session
        assert session is not None
        try:
            while True:
                frame = await track.recv()
                t_ns = time.monotonic_ns()
                pts_s = clock.seconds(int(frame.pts), float(frame.time_base))
                if pts_s is None:
                    self.frames_skipped += 1
                    continue
                if self.first_frame_s is None:
                    self.first_frame_s = time.monotonic()
                self.frames_received += 1
                if frame.width * frame.height > self.max_frame_pixels:
                    if not self.frames_downscaled:
                        logger.info("peer %s: %dx%d frames downscaled to %d pixels", self.id,
                                    frame.width, frame.height, self.max_frame_pixels)
                    self.frames_downscaled += 1
                # Capped and converted to an image on the session's align thread, not on this
                # loop (and never, if the latest-only slot replaces it first).
                decode = functools.partial(frame_to_bgr, frame, self.max_frame_pixels)
                if not session.push_undecoded(decode, pts_s, t_ns):
                    break
        except MediaStreamError:
            logger.info("peer %s: video track ended", self.id)
            self.close_soon()

    def _on_message(self, message: Any) -> None:
        try:
            msg = json.loads(message)
        except (TypeError, ValueError, RecursionError):  # deep nesting raises RecursionError
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "end":
            self._spawn(self.finish_stream())
        elif msg.get("type") == "skip_calibration" and self.session is not None:
            self.session.skip_phase()

    async def finish_stream(self) -> None:
        """The camera says its stream is over: end the session like the end of a file (open
        intervals are flushed as final events), send them and the last stats, then
        ``{"type": "end"}``. The connection stays open for the client to close."""
        if self.session is None or self._finished:
            return
        self._finished = True
        await asyncio.get_running_loop().run_in_executor(None, self.session.close)
        await asyncio.sleep(0)  # let the events hopped over from the pipeline thread go first
        stats = self.session.stats()
        stats["frames_received"] = self.frames_received
        self._send_text(json.dumps(stats, separators=(",", ":")))
        self._send_text(json.dumps({"type": "end", "stream": self.id}))

    def _send_text(self, text: str) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            ch.send(text)

    def _send_event(self, event: Any) -> None:
        self._send_text(event_to_json(event))

    async def _send_stats(self) -> None:
        while self.session is not None and self._closing is None and not self._finished:
            await asyncio.sleep(self.stats_every_s)
            stats = self.session.stats()
            stats["frames_received"] = self.frames_received
            self._send_text(json.dumps(stats, separators=(",", ":")))

    def close_soon(self) -> None:
        """Schedule :meth:`close` (callable from callbacks on the loop)."""
        if self._closing is None and self._loop is not None and not self._loop.is_closed():
            self._closing = self._loop.create_task(self._close())

    async def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()
        if self.session is not None:
            # Joining the pipeline thread blocks: never on the loop.
            await asyncio.get_running_loop().run_in_executor(None, self.session.close)
        if self.on_closed is not None:
            result = self.on_closed(self)
            if asyncio.iscoroutine(result):
                await result
        logger.info("peer %s closed", self.id)
