"""Standalone WebRTC server for remote cameras (``fesnet-spot webrtc-server``).

Routes (aiohttp):

- ``GET /``: a minimal client page (static/client.html) that sends the browser's camera and shows
  the events coming back;
- ``POST /offer``: signalling. Body ``{"sdp": ..., "type": "offer"}`` -> the answer, same shape.
  The client opens a data channel before the offer; the server sends each spotter event on it as
  the event JSON of docs/EVENTS.md, and ``{"type": "stats", ...}`` once a second;
- ``GET /health``: ``{"ok": true}``; with the token (or on loopback without one) also ``"peers"``,
  ``"max_peers"``, ``"rss_mb"``, ``"frames_dropped"``, ``"windows_skipped"``, ``"offers_rejected"``
  (load shedding summed over the current peers).

Every peer gets its own spotter state (a :class:`~fesnet.realtime.viewers.hub.LiveSession`); all
of them share the hub's engine. Access control (rules in :mod:`.access`): the server binds
127.0.0.1 unless told otherwise; bound elsewhere it requires a token (generated and printed if
none is given), passed as ``Authorization: Bearer <token>`` or ``?token=`` on /offer; a browser
request from another origin is refused (403), an offer must be ``application/json`` (415), at most
``max_peers`` connected peers and ``max_sdp_bytes`` of offer; a malformed offer gets a 400 and
leaves the server serving the others. Tokens are redacted from the access log, and every
response carries ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fesnet.realtime import exitcodes

from . import access
from .access import MAX_FRAME_PIXELS, MAX_SDP_BYTES, WEBRTC_PORT
from .hub import HubFull, SpotHub
from .rtc import OfferError, RtcPeer, parse_offer

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = WEBRTC_PORT


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    max_peers: int = 4
    max_sdp_bytes: int = MAX_SDP_BYTES
    stats_every_s: float = 1.0
    connect_timeout_s: float = 15.0
    allowed_origins: tuple[str, ...] = ()  # browser origins besides the server's own
    max_frame_pixels: int = MAX_FRAME_PIXELS  # larger camera frames are downscaled
    max_pending_offers: int = 8  # offers being parsed at once (they hold no peer slot)
    ice_all_interfaces: bool = False  # bound to loopback: also gather ICE on other interfaces


class WebRtcServer:
    """The aiohttp application and its peers. ``hub.config.max_sessions`` should be at least
    ``max_peers`` (it is the hard limit; ``max_peers`` is checked first for a clear 503)."""

    def __init__(self, hub: SpotHub, config: ServerConfig | None = None) -> None:
        self.hub = hub
        self.config = config or ServerConfig()
        self.token = access.resolve_token(self.config.host, self.config.token)
        self.ice_addresses = access.ice_addresses(self.config.host, self.config.ice_all_interfaces)
        self.peers: set[RtcPeer] = set()  # answered peers: each holds a slot of max_peers
        self.pending_offers = 0  # offers being read and applied: no slot yet
        self.offers_rejected = 0

    # -- app -----------------------------------------------------------------------------------
    def app(self) -> Any:
        from aiohttp import web

        # A little above the SDP limit so an oversized body gets our own 400, not aiohttp's 413
        # (bodies far above it are refused by aiohttp before they are read).
        app = web.Application(
            client_max_size=self.config.max_sdp_bytes + 4096, middlewares=[self._guard()]
        )
        app.on_response_prepare.append(self._no_referrer)
        access.redact_access_logs()
        app.router.add_get("/", self._index)
        app.router.add_get("/health", self._health)
        app.router.add_post("/offer", self._offer)
        app.router.add_static("/static/", STATIC)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def _guard(self) -> Any:
        """Middleware: loopback servers answer only to loopback host names (DNS rebinding); a
        state-changing request from a browser page of another origin is refused."""
        from aiohttp import web

        @web.middleware
        async def guard(request: Any, handler: Any) -> Any:
            if not access.host_allowed(request.headers.get("Host"), self.config.host):
                return web.json_response({"error": "unknown host name"}, status=403)
            if request.method not in access.SAFE_METHODS and not access.origin_allowed(
                request.headers.get("Origin"),
                request.headers.get("Host"),
                self.config.allowed_origins,
            ):
                return web.json_response({"error": "cross-origin request refused"}, status=403)
            return await handler(request)

        return guard

    @staticmethod
    async def _no_referrer(request: Any, response: Any) -> None:
        # The client page's URL can carry the token: never send it on as a Referer.
        response.headers["Referrer-Policy"] = "no-referrer"

    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        return web.FileResponse(STATIC / "client.html")

    async def _health(self, request: Any) -> Any:
        import psutil
        from aiohttp import web

        if self.token is not None and not access.token_ok(
            self.token, self._request_token(request)
        ):
            return web.json_response({"ok": True})  # details (load, memory) need the token
        sessions = [p.session for p in self.peers if p.session is not None]
        return web.json_response(
            {
                "ok": True,
                "peers": len(self.peers),
                "max_peers": self.config.max_peers,
                "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
                "frames_dropped": sum(s.source.dropped for s in sessions),
                "windows_skipped": sum(s.run.status()["windows_skipped"] for s in sessions),
                "offers_rejected": self.offers_rejected,
            }
        )

    def _request_token(self, request: Any) -> str | None:
        """The header's Bearer token (preferred), else ``?token=`` (that name, spelt as is)."""
        token = access.bearer_token(request.headers.get("Authorization"))
        return token if token is not None else access.query_token(request.rel_url.raw_query_string)

    def _full(self) -> Any:
        from aiohttp import web

        return web.json_response(
            {"error": f"server full ({self.config.max_peers} peers)"}, status=503
        )

    async def _offer(self, request: Any) -> Any:
        from aiohttp import web

        if not access.token_ok(self.token, self._request_token(request)):
            return web.json_response({"error": "missing or wrong token"}, status=401)
        if not access.is_json(request.headers.get("Content-Type")):
            self.offers_rejected += 1
            return web.json_response(
                {"error": f"an offer must be sent as {access.JSON_TYPE}"}, status=415
            )
        if len(self.peers) >= self.config.max_peers:
            return self._full()
        if self.pending_offers >= self.config.max_pending_offers:
            return web.json_response({"error": "too many offers at once; retry"}, status=503)
        if (request.content_length or 0) > self.config.max_sdp_bytes + 1024:
            return self._bad(f"offer body larger than {self.config.max_sdp_bytes} bytes")
        self.pending_offers += 1
        try:
            return await self._answer(request)
        finally:
            self.pending_offers -= 1

    async def _answer(self, request: Any) -> Any:
        """Read, check and apply one offer. Only an answered offer takes a peer slot: offers
        still being parsed (a burst of malformed ones) never make good ones see 'full'."""
        from aiohttp import web

        try:
            body = await request.read()
            if len(body) > self.config.max_sdp_bytes + 1024:
                raise OfferError(f"offer body larger than {self.config.max_sdp_bytes} bytes")
            try:
                data = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise OfferError(f"body is not JSON: {e}") from e
            offer = parse_offer(data, self.config.max_sdp_bytes)
            peer = RtcPeer(
                self.hub, prefix="peer", stats_every_s=self.config.stats_every_s,
                on_closed=self._forget, connect_timeout_s=self.config.connect_timeout_s,
                max_frame_pixels=self.config.max_frame_pixels, ice_addresses=self.ice_addresses,
            )
            answer = await peer.accept(offer)
        except OfferError as e:
            return self._bad(str(e))
        except HubFull as e:
            return web.json_response({"error": str(e)}, status=503)
        except web.HTTPRequestEntityTooLarge:
            return self._bad(f"offer body larger than {self.config.max_sdp_bytes} bytes")
        except web.HTTPException:
            raise
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            # The client went away mid-request: one line, no traceback (nobody reads the answer).
            logger.info("offer aborted by the client: %s", type(e).__name__)
            return web.json_response({"error": "request aborted"}, status=400)
        except Exception as e:  # never let one bad offer take the server down
            logger.warning("offer failed: %s: %s", type(e).__name__, e)
            logger.debug("offer failed", exc_info=True)
            return self._bad(f"offer failed: {type(e).__name__}")
        if len(self.peers) >= self.config.max_peers:  # the last slot went to another offer
            await peer.close()
            return self._full()
        self.peers.add(peer)
        logger.info("peer %s connected (%d peers)", peer.id, len(self.peers))
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "stream": peer.id})

    def _bad(self, message: str) -> Any:
        from aiohttp import web

        self.offers_rejected += 1
        logger.info("offer rejected: %s", message)
        return web.json_response({"error": message}, status=400)

    def _forget(self, peer: RtcPeer) -> None:
        self.peers.discard(peer)

    async def close_peers(self) -> None:
        await asyncio.gather(*(p.close() for p in list(self.peers)), return_exceptions=True)

    async def _on_shutdown(self, app: Any) -> None:
        await self.close_peers()

    # -- running -------------------------------------------------------------------------------
    async def start(self) -> Any:
        """Start listening on the running loop; returns the aiohttp runner (``await
        runner.cleanup()`` to stop). The bound port is in ``self.port``."""
        from aiohttp import web

        runner = web.AppRunner(self.app())
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        addresses = runner.addresses  # (host, port, ...) of every bound socket
        self.port = addresses[0][1] if addresses else self.config.port
        return runner

    def url(self, host: str | None = None, with_token: bool = False) -> str:
        """The client page's URL; ``with_token`` adds ``#token=...`` (a fragment: the browser
        never sends it to a server, so it reaches no log and no Referer)."""
        h = host or ("127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host)
        fragment = f"#token={self.token}" if with_token and self.token else ""
        return f"http://{h}:{getattr(self, 'port', self.config.port)}/{fragment}"


def serve_webrtc(hub: SpotHub, config: ServerConfig) -> int:
    """Run the WebRTC server until SIGINT / SIGTERM (exit code 0; 2 if it cannot listen); the
    hub's sessions are closed at the end."""
    from aiohttp import web

    server = WebRtcServer(hub, config)
    print(f"FESNet WebRTC server on {server.url()}")
    if server.token and not config.token:
        print(f"access token (generated): {server.token} (the page: {server.url(with_token=True)})")
    try:
        web.run_app(server.app(), host=config.host, port=config.port, print=None)
    except OSError as e:
        print(f"fesnet-spot: error: cannot listen on {config.host}:{config.port}: "
              f"{e.strerror or e}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    finally:
        hub.close_all()
    return 0
