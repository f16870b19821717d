"""One remote camera in a process of its own, for fesnet-bench's capacity run.

    python -m fesnet.realtime.bench.capacity_sender URL VIDEO --seconds S [--loopback]

Streams VIDEO (looped, at its own frame rate) to the WebRTC server at URL for S seconds, like
``fesnet-spot remote-camera``, and prints one JSON line when connected and one when done. In a
process of its own, the sender's decoding and VP8 encoding never hold the server's GIL.
``--loopback`` offers ICE candidates on 127.0.0.1 only (the server must do the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence


def loopback_ice() -> None:
    """ICE host candidates on 127.0.0.1 only: a loopback connection needs no network."""
    import aioice.ice

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    aioice.ice.get_host_addresses = loopback


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fesnet.realtime.bench.capacity_sender")
    p.add_argument("server")
    p.add_argument("video")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--loopback", action="store_true")
    a = p.parse_args(argv)
    if a.loopback:
        loopback_ice()
    from ..viewers.remote_client import RemoteCamera, SourceTrack

    async def go() -> int:
        cam = RemoteCamera(a.server, SourceTrack(a.video, loop=True))
        await cam.connect()
        print(json.dumps({"stream": cam.result.stream}), flush=True)
        result = await cam.run(a.seconds)
        print(json.dumps({"frames_sent": result.frames_sent}), flush=True)
        return 0

    return asyncio.run(go())


if __name__ == "__main__":
    raise SystemExit(main())
