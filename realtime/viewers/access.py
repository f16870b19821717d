"""Who may talk to a viewer server, and the limits both servers share: ports, tokens, origins,
hosts, content types, tokens kept out of logs, sizes. Shared by the Gradio app and the WebRTC
server (one rule, one place); pure functions (no aiohttp, no gradio), so both servers, their
tests and the command lines use one set of rules.

Rules (docs/VIEWERS.md "Access control"):

- Bound to loopback a server is open; a server bound beyond loopback always has a token (given,
  or generated per start and printed). It is sent as ``Authorization: Bearer <token>`` (the
  scheme in any case, RFC 9110) or, for the WebRTC server's page, as ``?token=`` / ``#token=``.
  The token is compared in constant time, and any header bytes are compared safely: a token that
  is not even text is simply wrong (401), never a server error.
- A browser page on another site must not be able to drive a local server (cross-site request
  forgery): a state-changing request that carries an ``Origin`` must come from the server's own
  origin or from an allow-listed one, and must be ``application/json`` (a cross-site ``<form>``
  or no-preflight ``fetch`` can only send text/plain, urlencoded or multipart bodies).
- A server bound to loopback answers only to loopback host names in ``Host`` (a page that
  rebinds its own DNS name to 127.0.0.1 gets 403: DNS rebinding).
- Tokens never reach a log: query strings and Referer headers are redacted in access logs,
  also where the name is percent-encoded (``?%74oken=``); a query token counts only under its
  literal name ``token``. A request the HTTP parser refuses (a NUL byte in a header) is logged
  as one line that names the reason, never the header's bytes.
- ICE: a server bound to loopback gathers and advertises loopback candidates only, unless
  asked for every interface (its media ports are then no wider than its signalling port).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from fesnet.argtypes import int_range

PORT = int_range(1, 65535)
"""A TCP port as an argparse type."""
GRADIO_PORT = 7860
WEBRTC_PORT = 8765
MAX_SDP_BYTES = 64 * 1024  # the largest SDP offer a viewer accepts
MAX_FRAME_PIXELS = 1280 * 720  # larger camera frames are downscaled to this many pixels
MAX_UPLOAD_MB = 200  # the largest video a Gradio tab may upload for replay

LOOPBACK_NAMES = ("localhost",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPE = "application/json"
TOKEN_NAME = "token"
# "token=" in any case, with any of its characters percent-encoded ("%74oken=", "%54OKEN=").
_ENCODED_NAME = "".join(
    f"(?:{re.escape(c)}|%{ord(c.lower()):02x}|%{ord(c.upper()):02x})" for c in TOKEN_NAME + "="
)
TOKEN_PATTERN = re.compile(rf"(?i)({_ENCODED_NAME})[^&\s\"'#]*|(bearer\s+)[^\s\"']+")
REDACTED = "[redacted]"
LOOPBACK_ICE = {4: "127.0.0.1", 6: "::1"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None) -> str | None:
    """The token a server bound to ``host`` requires: the given one; a fresh random one when
    bound beyond loopback without one; None (open) on loopback without one."""
    if token:
        return token
    if is_loopback(host):
        return None
    return secrets.token_urlsafe(18)


def _as_bytes(text: str) -> bytes | None:
    try:  # header values arrive as str with undecodable bytes kept as surrogates
        return text.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return None


def token_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; False (never an exception) for any ``given`` value."""
    if expected is None:
        return True
    if given is None:
        return False
    given_b, expected_b = _as_bytes(given), _as_bytes(expected)
    if given_b is None or expected_b is None:
        return False
    return hmac.compare_digest(expected_b, given_b)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not rest.strip():
        return None
    return rest.strip()


def query_token(raw_query: str) -> str | None:
    """The value of the first ``token=`` in a raw (undecoded) query string, percent-decoded;
    the name must be spelt literally: ``%74oken=`` is some other parameter, not a token."""
    for pair in raw_query.split("&"):
        name, eq, value = pair.partition("=")
        if name == TOKEN_NAME and eq:
            return unquote(value)
    return None


def ice_addresses(bound_host: str, all_interfaces: bool = False) -> list[str] | None:
    """The addresses a server bound to ``bound_host`` gathers ICE candidates on: its loopback
    address when bound to loopback (unless ``all_interfaces``); None (every interface) else."""
    if all_interfaces or not is_loopback(bound_host):
        return None
    try:
        version = ipaddress.ip_address(bound_host.strip("[]")).version
    except ValueError:  # "localhost"
        version = 4
    return [LOOPBACK_ICE[version]]


def _split_host(netloc: str, default_port: int | None) -> tuple[str, int | None]:
    parts = urlsplit("//" + netloc)
    try:
        port = parts.port
    except ValueError:
        return netloc.lower(), None
    return (parts.hostname or "").lower(), port if port is not None else default_port


def host_allowed(host_header: str | None, bound_host: str) -> bool:
    """A server bound to loopback answers only to loopback names (DNS rebinding); bound beyond
    loopback any Host is fine (the token guards it)."""
    if not is_loopback(bound_host):
        return True
    if not host_header:
        return False
    name, _ = _split_host(host_header, None)
    return is_loopback(name)


def origin_allowed(
    origin: str | None, host_header: str | None, allowed: Iterable[str] = ()
) -> bool:
    """True for a request without ``Origin`` (not a browser page), one from the server's own
    origin (same host and port as ``Host``), or one from an allow-listed origin."""
    if origin is None:
        return True
    origin = origin.strip()
    if origin.lower() in {a.strip().rstrip("/").lower() for a in allowed}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or not host_header:
        return False  # "null" (sandboxed frames, file://) and anything odd
    default = 443 if parts.scheme == "https" else 80
    try:
        origin_port = parts.port or default
    except ValueError:
        return False
    name, port = _split_host(host_header, default)
    return (parts.hostname.lower(), origin_port) == (name, port)


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == JSON_TYPE


def redact(text: str) -> str:
    """``token=...`` and ``Bearer ...`` replaced by a placeholder."""
    return TOKEN_PATTERN.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)


class RedactTokens(logging.Filter):
    """A logging filter that redacts tokens in the formatted message (access logs print request
    lines and Referer headers, which can carry ``?token=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class OneLineBadRequests(logging.Filter):
    """A request the HTTP parser refused (aiohttp logs a traceback whose text quotes the
    offending header line, which may hold a token) becomes one line: the status and the
    parser's reason, no header bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code, message = getattr(exc, "code", None), getattr(exc, "message", None)
        if isinstance(code, int) and 400 <= code < 500 and isinstance(message, str):
            reason = message.strip().splitlines()[0].rstrip(":") if message.strip() else "?"
            where = record.getMessage()
            record.msg, record.args = "%s: %d %s (%s)", (where, code, reason, type(exc).__name__)
            record.exc_info, record.exc_text = None, None
        return True


def redact_access_logs(names: Iterable[str] = ("aiohttp.access", "uvicorn.access")) -> None:
    """Install :class:`RedactTokens` on the servers' access loggers and
    :class:`OneLineBadRequests` on aiohttp's server log (idempotent)."""
    for name, kind in [*((n, RedactTokens) for n in names), ("aiohttp.server", OneLineBadRequests)]:
        log = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in log.filters):
            log.addFilter(kind())
