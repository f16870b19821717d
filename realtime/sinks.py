"""Event sinks: JSON Lines (one object per line, flushed per event), console lines, callbacks.

The schema is documented in docs/EVENTS.md. A sink is any callable taking a
:class:`~fesnet.realtime.types.SpotEvent`; sinks run on a stream's worker thread (several
streams may share one sink, so a sink is thread-safe) and must not block (a viewer hands the
event to its own queue or event loop). Each sink fails on its own: :class:`Fanout` hands every
event to every sink, so a file that cannot be written never silences the console or a viewer.
:func:`format_event` is the one human line per event, for the console and the viewers alike.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from .outputs import OutputError
from .types import SpotEvent

logger = logging.getLogger(__name__)

Sink = Callable[[SpotEvent], None]

def new_run_id() -> str:
    """A new id for the events one writer writes (a ``fesnet-spot run``, a viewer's export): its
    start time in UTC and 6 random hex digits, ``20261204T191530Z-3f9c2a``. Sortable by time,
    and two runs that start in the same second still differ."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def event_to_json(event: SpotEvent, run: str | None = None) -> str:
    """The event's JSON line (docs/EVENTS.md); ``run`` is put second, after ``type``."""
    d = event.to_dict()
    if run is not None:
        d = {"type": d["type"], "run": run, **d}
    return json.dumps(d, separators=(",", ":"), allow_nan=False)


class JsonlSink:
    """Appends one JSON object per event to a file, written with one ``os.write`` of the whole
    line (no buffer to flush), so a reader tailing the file, or a crash, never sees half a line.

    Every line carries the writer's ``run`` id (a new one per sink unless given): runs that
    append to one file all name their streams "0" or "s0", ... and number their expressions
    from 0, so only the run tells their lines apart.

    Whole lines or nothing: when the file cannot take a line (disk full, file size limit,
    ``/dev/full``), the part of it that was written is cut off again, the sink stops writing
    (a later line would leave a hole in the event sequence) and every call raises
    :class:`~fesnet.realtime.outputs.OutputError`; ``count`` / ``lost`` count the lines.
    Thread-safe."""

    def __init__(self, path: str | Path, mode: str = "a", run: str | None = None) -> None:
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', got {mode!r}")
        self.path = Path(path)
        self.run = run or new_run_id()
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write events to {self.path}: {e.strerror or e}") from e
        self._lock = threading.Lock()
        self.error: OutputError | None = None
        self.count = 0  # lines written
        self.lost = 0  # events not written because the file failed

    def __repr__(self) -> str:
        return f"the events file {self.path}"

    def __call__(self, event: SpotEvent) -> None:
        data = (event_to_json(event, self.run) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"JSONL sink {self.path} is closed")
            if self.error is not None:
                self.lost += 1
                raise self.error
            try:
                self._write_line(self._fd, data)
            except OSError as e:
                self.lost += 1
                self.error = OutputError(f"cannot write events to {self.path}: {e.strerror or e}")
                raise self.error from e
            self.count += 1

    @staticmethod
    def _write_line(fd: int, data: bytes) -> None:
        try:
            start: int | None = os.lseek(fd, 0, os.SEEK_END)
        except OSError:  # a pipe or a character device: nothing to cut back
            start = None
        done = 0
        try:
            while done < len(data):
                n = os.write(fd, data[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError:
            if done and start is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def write_events(path: str | Path, events: Iterable[SpotEvent]) -> int:
    """Write ``events`` to a new JSONL file at ``path`` through :class:`JsonlSink` (the same
    lines a run writes, under a run id of their own); returns how many. Raises OutputError
    (the file) or ValueError (an event that is not valid JSON, e.g. a NaN)."""
    sink = JsonlSink(path, mode="w")
    try:
        for event in events:
            sink(event)
        return sink.count
    finally:
        sink.close()


class Fanout:
    """Every event to every sink, each failing on its own: a sink that raises (a full disk, a
    closed stdout, a viewer gone) neither stops the caller nor starves the other sinks; its
    errors are counted and the first one logged. Thread-safe if the sinks are."""

    def __init__(self, sinks: Sequence[Sink], owner: str = "") -> None:
        self.sinks = list(sinks)
        self.owner = owner
        self.errors = 0
        self._failed: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, event: SpotEvent) -> None:
        for sink in self.sinks:
            try:
                sink(event)
            except Exception as e:
                with self._lock:
                    self.errors += 1
                    first = id(sink) not in self._failed
                    self._failed.add(id(sink))
                if first:
                    logger.error("%s: sink %r failed (further errors counted): %r",
                                 self.owner or "events", sink, e)


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


def format_event(event: SpotEvent, *, stream: bool = True) -> str:
    """One human line per event: the console prints it as the event happens, a viewer's log
    shows it for an expression's latest state. An onset's class is marked provisional (``ME?``):
    the final event's duration rules may change it. ``stream``: start with ``[stream]`` (a
    viewer shows one stream and leaves it out)."""
    head = f"[{event.stream}] " if stream else ""
    latency = "" if event.latency_ms is None else f", latency {event.latency_ms:.0f} ms"
    if event.type == "expression":
        if event.state == "onset":  # the class is the one ahead so far: its final decides
            return (
                f"{head}{event.onset_s:8.2f} s  {event.label + '?':<4} onset     "
                f"(class provisional; frame {event.onset_frame}, p={event.score:.2f}{latency})"
            )
        return (
            f"{head}{event.onset_s:8.2f} s  {event.label:<3} {event.state:<11}"
            f"{event.onset_s:.2f}-{event.offset_s:.2f} s (frames {event.onset_frame}-"
            f"{event.offset_frame}, apex {event.apex_s:.2f} s, p={event.score:.2f}"
            f"{latency}){regions_text(event.regions)}"
        )
    return f"{head}{event.t_s:8.2f} s  {event.type}: {event.message}"


class ConsoleSink:
    """Prints one line per event (for CLIs). Each line is one write under a lock, so the lines
    of streams that share the console never run into each other."""

    def __init__(self, stream: IO[str] | None = None, status: bool = True) -> None:
        self.stream = stream or sys.stdout
        self.status = status
        self._lock = threading.Lock()

    def __call__(self, event: SpotEvent) -> None:
        if event.type == "status" and not self.status:
            return
        line = format_event(event) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()

    def __repr__(self) -> str:
        return "the console"


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
