"""The access rules of :mod:`.access` as ASGI middleware in front of the Gradio app (the WebRTC
server applies the same rules as aiohttp middleware)."""

from __future__ import annotations

import json
from typing import Any

from . import access

# POST routes whose body is a form or a file by design; every other POST must be JSON.
FORM_ROUTES = ("/upload", "/login", "/login/")


class RequestGuard:
    """ASGI middleware in front of Gradio: the rules of :mod:`.access`. A server bound to
    loopback answers only to loopback Host names; a state-changing request must come from the
    app's own origin (or an allow-listed one) and, except uploads and the login form, be JSON,
    so a page on another site cannot drive the app (Gradio runs such requests otherwise)."""

    def __init__(self, app: Any, bound_host: str, allowed_origins: tuple[str, ...] = ()) -> None:
        self.app, self.bound_host, self.allowed_origins = app, bound_host, allowed_origins

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await self._reply(send, *refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Any, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host")
        if not access.host_allowed(host, self.bound_host):
            return 403, "unknown host name"
        method = scope.get("method", "GET")
        if method in access.SAFE_METHODS and scope["type"] == "http":
            return None
        if not access.origin_allowed(headers.get("origin"), host, self.allowed_origins):
            return 403, "cross-origin request refused"
        form_ok = scope["type"] == "websocket" or scope.get("path", "").endswith(FORM_ROUTES)
        if not form_ok and not access.is_json(headers.get("content-type")):
            return 415, f"this request must be sent as {access.JSON_TYPE}"
        return None

    @staticmethod
    async def _reply(send: Any, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
