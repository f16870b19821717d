"""The Gradio app (``fesnet-spot serve``) against a careless user, an API client, a page of another
site and a network it must not use (issue 15, items 1, 4, 5, 9, 11, 15). Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")

import netguard
from matplotlib.figure import Figure
from test_cli import face_clip

from fesnet.realtime.viewers.gradio_app import GradioViewer, launch
from fesnet.realtime.viewers.hub import HubConfig, LiveSession, SpotHub


class Req:
    """What a Gradio handler gets: the tab's session hash."""

    def __init__(self, session_hash: str) -> None:
        self.session_hash = session_hash


def make_hub(tiny_runtime, **config: Any) -> SpotHub:
    return SpotHub.from_runtime(tiny_runtime, HubConfig(**config))


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.5 s of a real face at 30 FPS."""
    return face_clip(tmp_path_factory.mktemp("clip") / "short.mp4", n=15)


async def _until_ended(live: LiveSession, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while live.running:
        assert time.monotonic() < deadline, "the replay did not end"
        await asyncio.sleep(0.05)


# -- item 1: every session closed once, the count true ---------------------------------------------
def test_replays_never_leak_hub_slots(tiny_runtime, short_clip: Path) -> None:
    """One tab replays a clip, presses Stop after it ended, six times over; then replays
    without stopping, starts a new replay over a running one, and another tab replays while
    the first tab's replay has ended by itself; finally the tabs close. Before: from the 5th
    replay on every tab got 'busy: 4 sessions already running' (here, with 2 slots, from the
    3rd), because Stop closed a session only while it ran and a new replay dropped the old
    session without closing it."""
    hub = make_hub(tiny_runtime, max_sessions=2)
    viewer = GradioViewer(hub)
    released: list[str] = []
    real_release = hub.release

    def count_release(session: LiveSession) -> None:
        released.append(session.id)
        real_release(session)

    hub.release = count_release  # type: ignore[method-assign]
    a, b = Req("tab-a"), Req("tab-b")

    async def main() -> list[str]:
        said = []
        for _ in range(6):
            said.append(await viewer.replay(str(short_clip), a))
            await _until_ended(viewer.tab("tab-a").live)
            said.append(await viewer.stop(a))
        said.append(await viewer.replay(str(short_clip), a))
        await _until_ended(viewer.tab("tab-a").live)  # ended by itself, never stopped
        said.append(await viewer.replay(str(short_clip), b))
        said.append(await viewer.replay(str(short_clip), b))  # over a running replay
        said.append(await viewer.replay(str(short_clip), a))
        viewer.unload(b)
        viewer.unload(a)
        return said

    said = asyncio.run(main())
    assert not [s for s in said if s.startswith("busy")], said
    assert sum(s.startswith("replaying") for s in said) == 10
    assert hub.sessions() == []
    assert len(released) == len(set(released)) == 10  # every session closed exactly once
    viewer.close()


# -- items 9 and 15: an idle tab costs nothing; tabs are bounded; temp files go --------------------
def test_the_timeline_is_redrawn_only_when_there_is_something_new(
    tiny_runtime, short_clip: Path
) -> None:
    """An open tab with no stream redrew the figure every second (~140 ms of CPU)."""
    viewer = GradioViewer(make_hub(tiny_runtime))
    tab = Req("idle")
    assert isinstance(viewer.tick_plot(tab), Figure)  # the first tick draws the empty plot
    for _ in range(5):
        assert not isinstance(viewer.tick_plot(tab), Figure)  # nothing new: skipped

    async def replay() -> None:
        await viewer.replay(str(short_clip), tab)
        await _until_ended(viewer.tab("idle").live)

    asyncio.run(replay())
    assert isinstance(viewer.tick_plot(tab), Figure)  # a new session: drawn once
    assert not isinstance(viewer.tick_plot(tab), Figure)
    viewer.close()


class _Closable:
    def __init__(self) -> None:
        self.closes = 0
        self.closed = False

    def close(self) -> None:
        self.closes += 1
        self.closed = True


def test_tabs_are_bounded_and_a_forgotten_tab_closes_its_session(tiny_runtime) -> None:
    """API clients never send unload: one tab per call grew the dict without bound."""
    viewer = GradioViewer(make_hub(tiny_runtime))
    first = viewer.tab("client-0")
    first.live = _Closable()  # type: ignore[assignment]
    for i in range(1, 1000):
        viewer.tab(f"client-{i}")
    assert len(viewer.tabs) <= 256
    deadline = time.monotonic() + 10
    while first.live.closes == 0 and time.monotonic() < deadline:  # closed on a helper thread
        time.sleep(0.02)
    assert first.live.closes == 1
    viewer.close()


def replayed(tiny_runtime, clip: Path, tab: Req) -> GradioViewer:
    """A viewer whose tab ``tab`` replayed ``clip`` to its end."""
    viewer = GradioViewer(make_hub(tiny_runtime))

    async def replay() -> None:
        await viewer.replay(str(clip), tab)
        await _until_ended(viewer.tab(tab.session_hash).live)

    asyncio.run(replay())
    return viewer


def test_exports_are_deleted_when_the_app_closes(tiny_runtime, short_clip: Path) -> None:
    tab = Req("exporter")
    viewer = replayed(tiny_runtime, short_clip, tab)
    path = Path(viewer.export(tab))
    assert path.is_file() and path.read_text().startswith("{")
    viewer.close()
    assert not path.exists() and not path.parent.exists()


def test_the_export_is_written_by_the_runs_jsonl_writer(tiny_runtime, short_clip: Path) -> None:
    """The downloadable event log has the lines a run's ``--events`` file has, written by the
    same writer: whole lines of valid JSON. An event JSON cannot carry (a NaN score) is refused,
    never written as ``NaN`` (which no JSON reader accepts)."""
    from fesnet.realtime.sinks import event_to_json
    from fesnet.realtime.types import SpotEvent

    tab = Req("exporter")
    viewer = replayed(tiny_runtime, short_clip, tab)
    live = viewer.tab("exporter").live
    kept = live.events()
    path = Path(viewer.export(tab))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines and all(json.loads(line) for line in lines)
    broken = SpotEvent(type="expression", stream=live.id, t_s=1.0, state="onset", label="ME",
                       onset_s=1.0, apex_s=1.0, onset_frame=30, apex_frame=30,
                       score=float("nan"), event_id=99)
    live._on_event(broken)  # as the stream delivers its events
    with pytest.raises(ValueError):
        viewer.export(tab)
    assert "NaN" not in path.read_text(encoding="utf-8")
    run = json.loads(lines[0])["run"]  # the export's own run id, on every line
    assert lines == [event_to_json(e, run) for e in kept]  # the lines a run writes
    viewer.close()


# -- items 4 and 15: requests from other sites, upload size --------------------------------------
def _launched(tiny_runtime, **options: Any) -> Any:
    port = netguard.free_port()
    hub = make_hub(tiny_runtime)
    demo, viewer, _ = launch(hub, "127.0.0.1", port, block=False, **options)
    yield f"http://127.0.0.1:{port}"
    demo.close(verbose=False)
    viewer.close()
    hub.close_all()


@pytest.fixture(scope="module")
def app(tiny_runtime) -> Any:
    yield from _launched(tiny_runtime)


@pytest.fixture()
def small_uploads_app(tiny_runtime) -> Any:
    yield from _launched(tiny_runtime, max_upload_mb=1)


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_page_of_another_site_cannot_drive_the_app(app: str) -> None:
    """A cross-site POST to the server-function route (the camera's ``offer``), the queue, and
    a rebound Host name. Before: Gradio ran them."""
    body = json.dumps({"data": [{}], "component_id": 1, "session_hash": "x",
                       "fn_name": "offer"}).encode()
    route = f"{app}/gradio_api/component_server"
    foreign = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    assert _http(route, body, foreign) == 403
    assert _http(route, body, {**foreign, "Content-Type": "application/json"}) == 403
    assert _http(route, body, {"Content-Type": "text/plain"}) == 415
    assert _http(f"{app}/gradio_api/queue/join", body, foreign) == 403
    rebound = {"Host": f"evil.example:{app.rsplit(':', 1)[1]}"}
    assert _http(f"{app}/", headers=rebound) == 403
    assert _http(f"{app}/") == 200
    own = {"Origin": app, "Content-Type": "application/json"}
    assert _http(route, body, own) not in (403, 415)  # reaches Gradio


def test_uploads_above_the_limit_are_refused(small_uploads_app: str) -> None:
    app = small_uploads_app
    boundary = "fesnetboundary"
    blob = b"\0" * (2 * 1024 * 1024)
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.mp4\"\r\n"
        "Content-Type: video/mp4\r\n\r\n"
    ).encode() + blob + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Origin": app}
    assert _http(f"{app}/gradio_api/upload", body, headers) == 413


# -- items 5, 11, 15: the real command behind a logging proxy --------------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from fesnet.model import checkpoint
    from fesnet.model.fesnet import FESNet, FESNetConfig

    torch.manual_seed(0)
    return checkpoint.save(tmp_path_factory.mktemp("ckpt") / "tiny.pt", FESNet(FESNetConfig.tiny()))


@pytest.fixture(scope="module")
def served(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``fesnet-spot serve`` (ONNX Runtime) behind a logging proxy and the audit hook, with its
    own TMPDIR; used like a person would (page, config), a second instance on the same port,
    then stopped with SIGTERM."""
    tmp = tmp_path_factory.mktemp("served")
    tmpdir = tmp / "tmp"
    tmpdir.mkdir()
    with netguard.LoggingProxy() as proxy:
        env, log = netguard.guarded_env(tmp, proxy)
        env["TMPDIR"] = str(tmpdir)
        port = netguard.free_port()
        args = ["serve", "--port", str(port), "--checkpoint", str(tiny_ckpt), "--backend", "onnx"]
        proc = netguard.spawn(args, env)
        try:
            netguard.wait_http(f"http://127.0.0.1:{port}/", proc)
            for path in ("/", "/config", "/gradio_api/info"):
                _http(f"http://127.0.0.1:{port}{path}")
            second = netguard.spawn(args, env)
            _out2, err2 = second.communicate(timeout=300)
            time.sleep(3)  # analytics and version checks run on background threads
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        return {
            "proxy": list(proxy.requests), "direct": netguard.attempts(log),
            "left": sorted(p.name for p in tmpdir.iterdir()), "rc": proc.returncode,
            "out": out, "err": err, "rc2": second.returncode, "err2": err2, "port": port,
        }


@pytest.mark.slow
def test_serve_makes_no_outbound_connection(served: dict[str, Any]) -> None:
    """Before: every start contacted api.gradio.app, huggingface.co (three times) and ONNX
    Runtime's telemetry host (mobile.events.data.microsoft.com)."""
    assert served["proxy"] == [], served["proxy"]
    assert served["direct"] == [], served["direct"]


@pytest.mark.slow
def test_serve_stops_cleanly_and_leaves_no_temporary_files(served: dict[str, Any]) -> None:
    assert served["rc"] == 0, served["err"]
    assert "Traceback" not in served["err"]
    assert not [n for n in served["left"] if n.startswith("fesnet-events-")], served["left"]


@pytest.mark.slow
def test_serve_on_a_port_in_use_is_one_line(served: dict[str, Any]) -> None:
    assert served["rc2"] == 2, served["err2"]
    assert "Traceback" not in served["err2"]
    assert f"cannot listen on 127.0.0.1:{served['port']}" in served["err2"]
