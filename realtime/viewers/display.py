"""What a viewer tab shows of its session: the newest frame (a replay's video panel), the aligned
crop, the stats box, the event log read as a result (each expression once), and the timeline of
committed scores with the thresholds in force. Pure rendering (matplotlib's object API, no pyplot
state; no gradio), so concurrent tabs can draw at once and the rendering is tested without a
server. It renders the session's :class:`~fesnet.realtime.types.SpotEvent` objects, each line by
the console's own ``format_event``."""

from __future__ import annotations

from typing import Any

import numpy as np

from fesnet.realtime.push import PushSource
from fesnet.realtime.sinks import format_event
from fesnet.realtime.types import SpotEvent

from .hub import LiveSession

CROP_DISPLAY_PX = 224
FRAME_DISPLAY_WIDTH = 640  # a replay's frames are sent to the page at most this wide
TIMELINE_S = 10.0  # seconds of history on the live timeline


def frame_data_url(image_bgr: np.ndarray, max_width: int = FRAME_DISPLAY_WIDTH) -> str:
    """A frame as a JPEG ``data:`` URL for the page's video panel, scaled down to ``max_width``
    (the face box travels apart, in fractions of the frame, so scaling never moves it)."""
    import base64

    import cv2

    h, w = image_bgr.shape[:2]
    if w > max_width:
        size = (max_width, max(1, round(h * max_width / w)))
        image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise ValueError(f"cannot encode a frame of shape {image_bgr.shape} as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def crop_image(crop: np.ndarray | None) -> np.ndarray | None:
    if crop is None:
        return None
    import cv2

    return cv2.resize(crop, (CROP_DISPLAY_PX, CROP_DISPLAY_PX), interpolation=cv2.INTER_NEAREST)


def stats_markdown(live: LiveSession) -> str:
    s = live.stats()
    lat = s["event_latency_p50_ms"] or s["score_latency_p50_ms"]
    cam = f"camera **{s['input_fps']:.1f} fps** · " if s["frames_in"] else ""
    return (
        f"**{live.id}** ({'running' if s['running'] else 'ended'}) · face: {s['state']}  \n"
        f"{cam}spotter **{s['fps']:.1f} fps** · frames {s['frames']} · dropped {s['dropped']}  \n"
        f"latency p50 **{'-' if lat is None else f'{lat:.0f} ms'}** · events {s['events']}"
        + _calibration_line(s["calibration"])
    )


def _calibration_line(c: dict[str, Any] | None) -> str:
    """The neutral-baseline phase as one line of the stats box ('' when the session has none)."""
    if c is None:
        return ""
    if c["phase"] == "calibrating":
        return (f"  \n**calibrating {100 * c['progress']:.0f}%**: keep a neutral face "
                "(or skip)")
    if c["phase"] == "calibrated":
        return (f"  \ncalibrated: thresholds on **{c['on_threshold']:.3f}** / off "
                f"{c['off_threshold']:.3f}")
    return f"  \ncalibration {c['phase']}"


def event_log(events: list[SpotEvent], n: int = 200) -> str:
    """The session's events as a result, newest first: each expression once (its latest state,
    in the place its onset had: an onset only while its interval is open, cancelled ones not
    at all; every state stays in the JSONL export); face and status events as they came."""
    rows: list[SpotEvent | None] = []
    row_of: dict[int | None, int] = {}  # event_id of an expression -> its row
    for e in events:
        if e.type != "expression":
            rows.append(e)
            continue
        if e.state == "onset":
            row_of[e.event_id] = len(rows)
            rows.append(e)
        elif e.event_id in row_of:
            rows[row_of.pop(e.event_id)] = None if e.state == "cancelled" else e
        elif e.state != "cancelled":
            rows.append(e)
    shown = [r for r in rows if r is not None][-n:]
    return "\n".join(format_event(e, stream=False) for e in reversed(shown))


def intervals_of(events: list[SpotEvent]) -> list[tuple[float, float | None, str]]:
    """Detected intervals from an event list: finals, plus an onset still open (end None)."""
    found: dict[int | None, tuple[float, float | None, str]] = {}
    for e in events:
        if e.type != "expression" or e.onset_s is None or e.label is None:
            continue
        if e.state == "onset":
            found[e.event_id] = (e.onset_s, None, e.label)
        elif e.state in ("final", "interrupted"):
            found[e.event_id] = (e.onset_s, e.offset_s, e.label)
        else:  # cancelled
            found.pop(e.event_id, None)
    return list(found.values())


def timeline_key(live: LiveSession | None) -> tuple[Any, ...]:
    """What the timeline of ``live`` depends on (its scores, events and the thresholds in
    force): the same key, the same picture."""
    if live is None:
        return (None,)
    view = live.view()
    t = view.recent_pts_s
    return (live.id, len(t), float(t[-1]) if len(t) else None, live.run.events_emitted,
            view.on_threshold, view.off_threshold)


def timeline_figure(live: LiveSession | None, window_s: float = TIMELINE_S) -> Any:
    """The last ``window_s`` of committed scores: p_expr = p(ME) + p(MaE), which the merger
    compares with its thresholds (the thresholds in force drawn across: after a calibration phase
    they are the person's), with p(ME) and p(MaE) thin below it, and the detected intervals
    shaded. Object-oriented matplotlib (no pyplot state), so concurrent tabs can draw at once."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 2.6), dpi=80)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    ax.set_xlabel("stream time (s)")
    t_end = window_s
    plotted = False
    if live is not None:
        view = live.view()
        t = view.recent_pts_s
        if len(t):
            t_end = max(float(t[-1]), window_s)
            keep = t >= t_end - window_s
            ax.plot(t[keep], view.recent_p_expr[keep], color="0.15", lw=1.6, label="p(expr)")
            ax.plot(t[keep], view.recent_me[keep], color="tab:orange", lw=0.8, label="p(ME)")
            ax.plot(t[keep], view.recent_mae[keep], color="tab:blue", lw=0.8, label="p(MaE)")
            plotted = True
        if view.on_threshold is not None:
            ax.axhline(view.on_threshold, color="tab:red", lw=0.9, ls="--",
                       label=f"on {view.on_threshold:.2f}")
        if view.off_threshold is not None and view.off_threshold != view.on_threshold:
            ax.axhline(view.off_threshold, color="tab:red", lw=0.7, ls=":",
                       label=f"off {view.off_threshold:.2f}")
        for start, end, label in intervals_of(live.events()):
            color = "tab:orange" if label == "ME" else "tab:blue"
            end_s = t_end if end is None else end
            if end_s < t_end - window_s:
                continue
            ax.axvspan(start, end_s, color=color, alpha=0.18)
            x = max(start, t_end - window_s)
            ax.text(x, 0.97, f" {label}", color=color, fontsize=8, va="top", clip_on=True)
        ax.set_title(f"{live.id}: last {window_s:.0f} s", fontsize=9)
    ax.set_xlim(t_end - window_s, t_end)
    if plotted:
        ax.legend(loc="upper left", fontsize=8, ncol=5)
    fig.tight_layout()
    return fig


def panel(live: LiveSession, seen: Any = None) -> dict[str, Any]:
    """The video panel's state of a session, JSON-ready: ``mode`` (``camera`` for a pushed
    stream, whose picture is the page's own camera; ``replay`` for a file), ``stats`` (as the
    camera's data channel sends them), ``event`` (the newest event's line), ``seq`` and ``box``
    of the newest frame, and for a replay ``image``, that frame, unless it is the ``seen`` one."""
    camera = isinstance(live.source, PushSource)
    last = live.last_event()
    out: dict[str, Any] = {
        "mode": "camera" if camera else "replay",
        "stats": live.stats(),
        "event": "" if last is None else format_event(last, stream=False),
        "seq": None,
        "box": None,
    }
    frame = live.frame()
    if frame is not None:
        out["seq"], out["box"] = frame.seq, frame.box
        if not camera and frame.seq != seen:
            out["image"] = frame_data_url(frame.image)
    return out
