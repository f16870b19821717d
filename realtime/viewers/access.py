"""Who may use a viewer: bound to loopback it is open; bound beyond it, a token is required.

Shared by the Gradio app and the WebRTC server (one rule, one place). The token is compared in
constant time; a server bound beyond loopback without a token gets a fresh random one, printed
at start.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets

GRADIO_PORT = 7860
WEBRTC_PORT = 8765
MAX_SDP_BYTES = 64 * 1024  # the largest SDP offer a viewer accepts
MAX_FRAME_PIXELS = 1280 * 720  # larger camera frames are downscaled to this many pixels
MAX_UPLOAD_MB = 200  # the largest video a Gradio tab may upload for replay


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
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


def token_ok(expected: str | None, given: str | None) -> bool:
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
