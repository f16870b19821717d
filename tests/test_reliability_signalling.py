"""The WebRTC server's signalling against a curious client (issue 22, items 11, 12 and 14): what
it takes as a token, what its logs show of a request it cannot parse, and which ICE candidates
a server bound to loopback advertises. Every server here listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging

import pytest

pytest.importorskip("aiortc")
pytest.importorskip("aiohttp")

from test_reliability_access import offer_body, raw_status, request
from test_webrtc_server import make_hub, start_server

from fesnet.realtime.viewers import access

JSON = {"Content-Type": "application/json"}


# -- item 11: the token under its own name only, redacted however it is spelt ----------------------
@pytest.mark.usefixtures("loopback_ice")
def test_a_token_counts_only_under_its_literal_name_and_never_reaches_the_log(
    tiny_runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """``?%74oken=`` is ``token`` once percent-decoded: aiohttp's query parser took it as the
    token and the access log printed it in clear."""
    hub = make_hub(tiny_runtime)
    caplog.set_level(logging.INFO)

    async def main_() -> dict[str, int]:
        server, runner, _url = await start_server(hub, token="s3cret-t0ken")
        codes = {}
        try:
            for name, query in {
                "encoded_t": "%74oken=s3cret-t0ken", "encoded_all": "%74%6F%6b%65%6e=s3cret-t0ken",
                "encoded_eq": "token%3Ds3cret-t0ken", "literal": "token=s3cret-t0ken",
            }.items():
                pc, body = await offer_body()
                data = body.encode()
                # Sent as bytes: an HTTP client would normalise "%74" to "t" before sending.
                head = (f"POST /offer?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                        f"application/json\r\nContent-Length: {len(data)}\r\nConnection: "
                        "close\r\n\r\n").encode()
                codes[name] = await raw_status(server.port, head, data)
                await pc.close()
                await server.close_peers()
            return codes
        finally:
            await runner.cleanup()

    codes = asyncio.run(main_())
    assert codes == {"encoded_t": 401, "encoded_all": 401, "encoded_eq": 401, "literal": 200}
    access_lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert sum("/offer?" in line for line in access_lines) == 4
    assert "s3cret-t0ken" not in caplog.text
    assert hub.sessions() == []


def test_query_tokens_are_read_and_redacted_by_one_rule() -> None:
    assert access.query_token("x=1&token=a%2Bb&token=second") == "a+b"
    for raw in ("%74oken=abc", "TOKEN=abc", "tok%65n=abc", "token", "xtoken=abc"):
        assert access.query_token(raw) is None, raw
    for line in ("POST /offer?%74oken=abc HTTP/1.1", "GET /?x=1&%54%4F%4B%45%4E=abc",
                 "GET /?token%3dabc", "Referer: http://h/?Token=abc#x"):
        assert "abc" not in access.redact(line), line


# -- item 12: a NUL byte in a header --------------------------------------------------------------
def test_a_header_the_parser_refuses_is_one_log_line(
    tiny_runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: aiohttp's "Error handling request" with a full traceback, whose text quoted the
    header line (a token in it would have been logged)."""
    hub = make_hub(tiny_runtime)
    caplog.set_level(logging.INFO)

    async def main_() -> tuple[int, int]:
        server, runner, _url = await start_server(hub)
        try:
            bad = await raw_status(server.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   b"Authorization: Bearer s3c\x00ret\r\nConnection: close\r\n\r\n")
            good = await raw_status(server.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"Connection: close\r\n\r\n")
            return bad, good
        finally:
            await runner.cleanup()

    assert asyncio.run(main_()) == (400, 200)
    errors = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(errors) == 1, caplog.text
    assert errors[0].exc_info is None and "\n" not in errors[0].getMessage()
    assert "400" in errors[0].getMessage() and "Invalid header value char" in errors[0].getMessage()
    assert "Traceback" not in caplog.text and "s3c" not in caplog.text


# -- item 14: ICE candidates of a loopback server --------------------------------------------------
def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


@pytest.mark.parametrize("bind, all_interfaces", [("127.0.0.1", False), ("127.0.0.1", True)])
def test_a_loopback_server_offers_only_loopback_candidates(
    bind: str, all_interfaces: bool, tiny_runtime
) -> None:
    """No ``loopback_ice`` fixture here: the machine's real interfaces. A server bound to
    127.0.0.1 gathered candidates on every other address of the machine and put them in its
    answer; now only 127.0.0.1, unless ``--ice-all-interfaces`` asks for every interface."""
    import aioice.ice

    machine = set(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))
    hub = make_hub(tiny_runtime)

    async def main_() -> set[str]:
        server, runner, url = await start_server(hub, host=bind,
                                                 ice_all_interfaces=all_interfaces)
        try:
            pc, body = await offer_body()
            status, _, answer = await request(f"{url}/offer", body=body, headers=JSON)
            assert status == 200, answer
            await pc.close()
            await server.close_peers()
            return _candidate_addresses(json.loads(answer)["sdp"])
        finally:
            await runner.cleanup()

    offered = asyncio.run(main_())
    if all_interfaces:
        assert offered == machine
    else:
        assert offered == {"127.0.0.1"}
        assert all(ipaddress.ip_address(a).is_loopback for a in offered)
    assert hub.sessions() == []


def test_which_addresses_a_server_gathers_on() -> None:
    assert access.ice_addresses("127.0.0.1") == ["127.0.0.1"]
    assert access.ice_addresses("localhost") == ["127.0.0.1"]
    assert access.ice_addresses("::1") == ["::1"]
    assert access.ice_addresses("127.0.0.1", all_interfaces=True) is None
    assert access.ice_addresses("0.0.0.0") is None
    assert access.ice_addresses("192.0.2.7") is None
