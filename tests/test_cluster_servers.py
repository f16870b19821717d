"""``fesnet-spot webrtc-server --cluster`` and ``fesnet-spot serve --cluster``: the cameras'
ingest stays in the server, the model runs on Ray, and the access token is still in force.

The WebRTC server joins a running loopback cluster (``ray://``) and a real remote camera streams
the sample clip to it; the Gradio viewer starts its own private Ray (``--cluster auto``), and
every socket of that process tree is on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="cluster tests need the [cluster] extra (ray[serve])")

from cluster_helpers import (
    LOOPBACK_ICE_CLI,
    SAMPLE,
    ClusterProcess,
    free_port,
    not_loopback,
    stop,
    wait_http,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterProcess]:
    c = ClusterProcess(workers=1)
    try:
        yield c
    finally:
        c.close()


def _server(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``fesnet-spot ARGS`` with ICE on loopback, its output in ``log``."""
    out = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-c", LOOPBACK_ICE_CLI, *args],
        stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env,
    )


def _status(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_webrtc_server_on_the_cluster_spots_a_remote_camera_with_its_token(cluster, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["webrtc-server", "--port", str(port), "--token", TOKEN, "--cluster", cluster.address]
    server = _server(args, tmp_path / "server.log")
    try:
        wait_http(f"{url}/health", server)
        assert "model tier on Ray" in (tmp_path / "server.log").read_text()
        offer = json.dumps({"type": "offer", "sdp": "v=0"}).encode()
        assert _status(f"{url}/offer", offer) == 401
        assert _status(f"{url}/offer?token=wrong", offer) == 401
        cam = subprocess.run(
            [sys.executable, "-c", LOOPBACK_ICE_CLI, "remote-camera", str(SAMPLE), "--server",
             url, "--token", TOKEN, "--duration", "12", "--stats"],
            capture_output=True, text=True, timeout=240,
        )
        assert cam.returncode == 0, cam.stderr[-3000:]
        msgs = [json.loads(line) for line in cam.stdout.splitlines() if line.startswith("{")]
        assert any(m["type"] == "face_found" for m in msgs), cam.stderr[-2000:]
        stats = [m for m in msgs if m["type"] == "stats"]
        # Windows were scored (by the model tier): the session measured a score latency.
        assert any(s["score_latency_p50_ms"] is not None for s in stats), stats[-1:]
        assert not_loopback(server.pid) == []
        assert cluster.command("status")["not_loopback"] == []
    finally:
        stop(server)


def test_a_server_on_ray_client_routes_no_request_itself(cluster, tmp_path):
    """Serve's handle probes the replicas' queue lengths with a 0.1 s deadline and cancels the
    late probes; in a Ray Client process each late reply raised ``InvalidStateError`` in Ray
    Client's data thread, a traceback on the server's stderr (244 in 15 s here, where a 1 ms
    deadline and no queue-length cache make every probe late, as a busy machine does now and
    then), and more when the connection closed. The server's calls now go through a relay
    actor inside the cluster, so this process routes nothing and probes nothing."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    env = {**os.environ, "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "0.001",
           "RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S": "0"}
    server = _server(["webrtc-server", "--port", str(port), "--cluster", cluster.address], log,
                     env)
    try:
        wait_http(f"{url}/health", server)
        cam = subprocess.run(
            [sys.executable, "-c", LOOPBACK_ICE_CLI, "remote-camera", str(SAMPLE), "--server",
             url, "--duration", "12", "--stats"],
            capture_output=True, text=True, timeout=240,
        )
        assert cam.returncode == 0, cam.stderr[-3000:]
        msgs = [json.loads(line) for line in cam.stdout.splitlines() if line.startswith("{")]
        stats = [m for m in msgs if m["type"] == "stats"]
        assert any(s["score_latency_p50_ms"] is not None for s in stats), stats[-1:]
    finally:
        stop(server)
    text = log.read_text()
    assert server.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "InvalidStateError" not in text, text[-3000:]
    assert "Failed to get queue length" not in text  # no Serve router in this process
    assert "More than 10MB of messages" not in text  # Ray Client's volume warning is noise here


def test_gradio_viewer_with_a_private_ray_keeps_its_login_and_loopback(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    server = _server(["serve", "--port", str(port), "--token", TOKEN, "--cluster", "auto"], log)
    try:
        wait_http(f"{url}/", server)
        text = log.read_text()
        assert "model tier on Ray (auto)" in text, text[-3000:]
        assert _status(f"{url}/config") == 401  # nothing but the login form without the token
        wrong = urllib.parse.urlencode({"username": "x", "password": "nope"}).encode()
        assert _status(f"{url}/login", wrong) in (400, 401)
        right = urllib.parse.urlencode({"username": "x", "password": TOKEN}).encode()
        assert _status(f"{url}/login", right) == 200
        # The private Ray started under the viewer: GCS, raylet, agents, Serve controller and
        # the replica, all on loopback.
        assert not_loopback(server.pid) == []
    finally:
        stop(server)
