"""The viewers' CLI subcommands, registered by ``fesnet-spot`` (realtime/cli.py): an entry point.

Light on purpose: defining the options imports neither gradio nor aiortc (``fesnet-spot run``
must start fast); the chosen command's module is imported only when it runs. This module only
dispatches: it loads the model (``fesnet.model.runtime``), builds the hub (with the camera
sessions' calibration phase from calibration/ when asked for) and hands both to a server; no
server imports anything from here.

- ``fesnet-spot serve``: the Gradio live viewer (webcam over WebRTC, replays, timeline, export);
- ``fesnet-spot webrtc-server``: the standalone WebRTC server for remote cameras;
- ``fesnet-spot remote-camera SOURCE``: stream a video file or webcam to that server.

``serve`` and ``webrtc-server`` take ``--cluster auto|ray://HOST:PORT``: each camera's ingest
(track, tracker, ring, merger) stays in the server and the model runs on Ray
(realtime/cluster/, docs/SCALING.md). Host, token and peer limits do not change with it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fesnet.argtypes import float_range, int_range
from fesnet.model.runtime import add_runtime_arguments
from fesnet.realtime import exitcodes
from fesnet.realtime.cluster.config import (
    ClusterError,
    ClusterUnavailable,
    add_cluster_arguments,
    cluster_config,
)

from .access import (
    GRADIO_PORT,
    MAX_FRAME_PIXELS,
    MAX_SDP_BYTES,
    MAX_UPLOAD_MB,
    PORT,
    WEBRTC_PORT,
)

COMMANDS = ("serve", "webrtc-server", "remote-camera")


def _access_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; anything else needs a token)",
    )
    parser.add_argument("--port", type=PORT, default=port, help="TCP port (1-65535)")
    parser.add_argument(
        "--token",
        default=None,
        help="access token (generated and printed when bound beyond loopback)",
    )
    parser.add_argument(
        "--allow-origin", action="append", default=[], metavar="ORIGIN",
        help="a browser origin (e.g. https://cam.example.org) that may call this server besides "
        "its own; repeatable. Pages of any other site are refused (403)",
    )
    parser.add_argument(
        "--max-frame-pixels", type=int_range(64 * 64), default=MAX_FRAME_PIXELS,
        help="camera frames with more pixels are downscaled to this many (aspect kept)",
    )
    parser.add_argument(
        "--ice-all-interfaces", action="store_true",
        help="bound to loopback, the server gathers and offers ICE candidates on loopback "
        "only; with this flag, on every interface of the machine (bound elsewhere it always "
        "does)",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument(
        "--calibrate-s", type=float_range(0.0), default=0.0,
        help="each camera starts with this many seconds of neutral face to calibrate the "
        "thresholds to the person (e.g. 3; skippable in the page; replays never calibrate). "
        "Off by default: with the shipped checkpoint it lowered F1 (docs/CALIBRATION.md)",
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    _access_arguments(parser, GRADIO_PORT)
    parser.add_argument("--max-sessions", type=int_range(1, 64), default=4,
                        help="concurrent cameras/replays across all tabs")
    parser.add_argument("--max-upload-mb", type=int_range(1, 100_000), default=MAX_UPLOAD_MB,
                        help="largest video a tab may upload for replay, in MB")
    add_model_arguments(parser)
    add_cluster_arguments(parser)


def add_webrtc_arguments(parser: argparse.ArgumentParser) -> None:
    _access_arguments(parser, WEBRTC_PORT)
    parser.add_argument("--max-peers", type=int_range(1, 64), default=4,
                        help="concurrent remote cameras")
    parser.add_argument("--max-sdp-bytes", type=int_range(1024, 1024 * 1024),
                        default=MAX_SDP_BYTES, help="largest accepted SDP offer")
    add_model_arguments(parser)
    add_cluster_arguments(parser)


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="video file or webcam:N")
    parser.add_argument("--server", default=f"http://127.0.0.1:{WEBRTC_PORT}",
                        help="WebRTC server URL")
    parser.add_argument("--token", default=None, help="access token of the server")
    parser.add_argument("--loop", action="store_true", help="loop a video file")
    parser.add_argument("--duration", type=float_range(0.0, lo_open=True), default=None,
                        help="stop after N seconds")
    parser.add_argument("--stats", action="store_true", help="also print the stats messages")


def register(subparsers: Any) -> None:
    """Add the three subcommands to an ``add_subparsers()`` object."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    add_serve_arguments(
        subparsers.add_parser(
            "serve", help="Gradio live viewer (webcam over WebRTC, replays)", formatter_class=fmt
        )
    )
    add_webrtc_arguments(
        subparsers.add_parser(
            "webrtc-server", help="WebRTC server for remote cameras", formatter_class=fmt
        )
    )
    add_remote_arguments(
        subparsers.add_parser(
            "remote-camera", help="stream a file/webcam to a WebRTC server", formatter_class=fmt
        )
    )


def make_hub(args: argparse.Namespace, max_sessions: int) -> Any:
    """The model loaded as every program loads it, in a hub whose camera sessions calibrate
    first when ``--calibrate-s`` > 0 (the relative rule where the checkpoint allows it)."""
    from fesnet.model.runtime import LoadError, load_runtime, runtime_config

    from .hub import HubConfig, SpotHub

    try:
        cluster = cluster_config(args)
        if cluster is None:
            runtime = load_runtime(runtime_config(args))
        else:
            import atexit

            from fesnet.realtime.cluster.placement import RayPlacement

            placement = RayPlacement(cluster)
            try:
                runtime = load_runtime(runtime_config(args), placement=placement)
            except BaseException:  # refused, failed or stopped while starting: leave Ray now
                placement.close()
                raise
            # Registered after Ray's own exit hook, so it runs first: the cluster is left (a
            # private Ray's processes ended) before Ray shuts down what it knows of.
            atexit.register(placement.close)
            print(f"model tier on Ray ({cluster.address}): {runtime.backend.name}", flush=True)
    except (LoadError, ClusterError) as e:  # a bad checkpoint, backend, stride or cluster
        print(f"fesnet-spot: error: {e}", file=sys.stderr)
        unavailable = isinstance(e, ClusterUnavailable)  # nothing answers: a failure
        raise SystemExit(exitcodes.FAILED if unavailable else exitcodes.BAD_INPUT) from e
    camera_phase = None
    if args.calibrate_s > 0:
        from fesnet.calibration.baseline import BaselineConfig, session_phase
        from fesnet.calibration.profile import ThresholdRule, checkpoint_rule

        rule = checkpoint_rule(runtime.checkpoint.meta) or ThresholdRule()
        camera_phase = session_phase(BaselineConfig(args.calibrate_s, rule=rule))
    config = HubConfig(max_sessions=max_sessions, camera_phase=camera_phase)
    return SpotHub.from_runtime(runtime, config)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand ``args.command`` (one of COMMANDS)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "serve":
        from .gradio_app import serve_gradio

        return serve_gradio(
            make_hub(args, args.max_sessions), args.host, args.port, args.token,
            allowed_origins=tuple(args.allow_origin), max_upload_mb=args.max_upload_mb,
            max_frame_pixels=args.max_frame_pixels, ice_all_interfaces=args.ice_all_interfaces,
        )
    if args.command == "webrtc-server":
        from .webrtc_server import ServerConfig, serve_webrtc

        config = ServerConfig(host=args.host, port=args.port, token=args.token,
                              max_peers=args.max_peers, max_sdp_bytes=args.max_sdp_bytes,
                              allowed_origins=tuple(args.allow_origin),
                              max_frame_pixels=args.max_frame_pixels,
                              ice_all_interfaces=args.ice_all_interfaces)
        return serve_webrtc(make_hub(args, args.max_peers), config)
    if args.command == "remote-camera":
        logging.getLogger().setLevel(logging.WARNING)
        from .remote_client import remote_camera

        return remote_camera(args)
    raise ValueError(f"not a viewer command: {args.command!r}")
