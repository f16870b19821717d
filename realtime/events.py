"""Event sinks: JSON Lines (one object per line, flushed per event), console lines, callbacks.

The schema is documented in docs/EVENTS.md. A sink is any callable taking a
:class:`~fesnet.realtime.types.SpotEvent`; sinks run on the pipeline's worker thread, so a sink
must not block (a viewer hands the event to its own queue or event loop).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .types import SpotEvent

Sink = Callable[[SpotEvent], None]

SCHEMA_VERSION = 1


def event_to_json(event: SpotEvent) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), allow_nan=False)


class JsonlSink:
    """Appends one JSON object per event to a file and flushes it, so a reader tailing the file
    (or a crash) never sees half a line. Thread-safe."""

    def __init__(self, path: str | Path, mode: str = "a") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open(mode, encoding="utf-8")
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, event: SpotEvent) -> None:
        line = event_to_json(event)
        with self._lock:
            if self._fh is None:
                raise RuntimeError(f"JSONL sink {self.path} is closed")
            self._fh.write(line + "\n")
            self._fh.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSONL event file (blank lines ignored)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def regions_text(regions: dict[str, float] | None, least: float = 0.1, most: int = 3) -> str:
    """Which regions moved, for humans: '  moved: mouth 62%, brows 21%' (the largest shares of at
    least ``least``, at most ``most`` of them); '' without a geometry channel."""
    if not regions:
        return ""
    parts = [f"{name} {share:.0%}" for name, share in regions.items() if share >= least][:most]
    return f"  moved: {', '.join(parts)}" if parts else ""


def format_event(event: SpotEvent) -> str:
    """One human line per event, for the console."""
    if event.type == "expression":
        if event.state == "onset":
            return (
                f"[{event.stream}] {event.onset_s:8.2f} s  {event.label:<3} onset      "
                f"(frame {event.onset_frame}, p={event.score:.2f}, "
                f"latency {event.latency_ms:.0f} ms)"
            )
        return (
            f"[{event.stream}] {event.onset_s:8.2f} s  {event.label:<3} {event.state:<11}"
            f"{event.onset_s:.2f}-{event.offset_s:.2f} s (frames {event.onset_frame}-"
            f"{event.offset_frame}, apex {event.apex_s:.2f} s, p={event.score:.2f}, "
            f"latency {event.latency_ms:.0f} ms){regions_text(event.regions)}"
        )
    return f"[{event.stream}] {event.t_s:8.2f} s  {event.type}: {event.message}"


class ConsoleSink:
    """Prints one line per event (for CLIs)."""

    def __init__(self, stream: IO[str] | None = None, status: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.status = status

    def __call__(self, event: SpotEvent) -> None:
        if event.type == "status" and not self.status:
            return
        print(format_event(event), file=self.stream, flush=True)


class ListSink:
    """Collects events in memory (tests, summaries). Thread-safe."""

    def __init__(self) -> None:
        self.events: list[SpotEvent] = []
        self._lock = threading.Lock()

    def __call__(self, event: SpotEvent) -> None:
        with self._lock:
            self.events.append(event)

    def of_type(self, kind: str) -> list[SpotEvent]:
        with self._lock:
            return [e for e in self.events if e.type == kind]
