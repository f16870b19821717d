"""Run a ``fesnet-spot`` command in a child process that cannot reach beyond loopback, and record
every attempt it makes to (issue 15, item 5: no analytics or telemetry).

Two nets, both on 127.0.0.1 only:

- a logging proxy (:class:`LoggingProxy`): HTTP_PROXY / HTTPS_PROXY / ALL_PROXY point at it, it
  records each request line (``CONNECT api.gradio.app:443``, ``GET http://...``) and answers 403,
  never forwarding anything;
- an audit hook in the child (``sitecustomize.py`` on its PYTHONPATH): every name lookup and every
  socket connect to a non-loopback address is recorded and refused, so a library that ignores the
  proxy variables is caught too, without any packet leaving the machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

SITECUSTOMIZE = '''
import ipaddress, json, os, sys

_LOG = os.environ["FESNET_TEST_NET_LOG"]
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _local(host):
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%")[0]
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified


def _hook(event, args):
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect":
        addr = args[1]
        if not isinstance(addr, tuple):  # a unix socket path
            return
        host = addr[0]
    else:
        return
    if _local(host):
        return
    with open(_LOG, "a") as f:
        f.write(json.dumps({"event": event, "host": str(host)}) + "\\n")
    raise OSError(f"blocked by the test's network guard: {host}")


sys.addaudithook(_hook)
'''


class LoggingProxy:
    """An HTTP/HTTPS proxy on 127.0.0.1 that logs request lines and forwards nothing."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoggingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0]
                    self.requests.append(line.decode("latin-1"))
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass


def guarded_env(tmp: Path, proxy: LoggingProxy) -> tuple[dict[str, str], Path]:
    """The child's environment: proxy variables, the audit hook, a private TMPDIR."""
    site = tmp / "netguard-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp / "netguard.jsonl"
    log.touch()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        HTTP_PROXY=proxy.url, HTTPS_PROXY=proxy.url, ALL_PROXY=proxy.url,
        http_proxy=proxy.url, https_proxy=proxy.url, all_proxy=proxy.url,
        NO_PROXY="127.0.0.1,localhost,::1", no_proxy="127.0.0.1,localhost,::1",
        PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        FESNET_TEST_NET_LOG=str(log), OMP_NUM_THREADS="1",
    )
    return env, log


def attempts(log: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 240.0) -> None:
    """Wait until ``url`` answers (any HTTP status) or the process exits."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.communicate()}")
        try:
            opener.open(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fesnet.realtime.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
