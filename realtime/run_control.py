"""How a ``fesnet-spot run`` ends, seen from the command line: what can stop it early (a stop
signal, an output that cannot be written, a closed stdout), the exit code that says which
(:mod:`.exitcodes`), and why a run that ended normally found nothing.

One :class:`RunControl` serves every kind of run (one stream, several in this process, streams
on Ray): whatever runs registers how to stop it (``on_stop``), and the sinks it wraps fail on
their own (an events file that cannot be written stops the run; the console keeps printing)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from . import exitcodes
from .outputs import OutputError


class RunControl:
    """What can end a run early, seen from the CLI: a stop signal, an output that cannot be
    written, a closed stdout. Each asks everything registered with ``on_stop`` to stop (open
    intervals are then closed as "interrupted"); the first cause is kept for the exit code."""

    def __init__(self) -> None:
        self._stoppers: list[Callable[[], None]] = []
        self.signum: int | None = None
        self.output_error: OutputError | None = None
        self.stopped_by_output = False  # the output failed during the run and stopped it
        self.stdout_closed = False
        self.stopping = False

    def on_stop(self, stop: Callable[[], None]) -> None:
        """Call ``stop`` (it must not wait: a signal handler calls it) when the run must end;
        at once if it already must."""
        self._stoppers.append(stop)
        if self.stopping:
            stop()

    def stop(self) -> None:
        self.stopping = True
        for stop in list(self._stoppers):
            stop()

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM stop the run (a second one stops waiting) while inside. A handler
        that was not Python's (a library's, set in C) is not put back: this one stays."""
        old = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                if h is not None:
                    signal.signal(s, h)

    def on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop waiting for a clean end
            raise exitcodes.Stopped(signum)
        self.signum = signum
        self.stop()

    def output_failed(self, error: OutputError) -> None:
        """An output (events file, annotated video) cannot be written: stop the run."""
        if self.output_error is None:
            self.output_error, self.stopped_by_output = error, True
            self.stop()

    def output(self, sink: Callable[[Any], None]) -> Callable[[Any], None]:
        """``sink`` (the events file) whose write failure stops the run."""
        return _Output(self, sink)

    def console(self, sink: Callable[[Any], None]) -> Callable[[Any], None]:
        """The console sink: a closed stdout (``| head`` exited) stops the run quietly."""
        return _Console(self, sink)

    def exit_code(self, failed: BaseException | None) -> int:
        if failed is not None:
            return exitcodes.FAILED
        if self.output_error is not None:
            return exitcodes.OUTPUT_FAILED
        if self.stdout_closed:
            return exitcodes.STDOUT_CLOSED
        if self.signum is not None:
            return exitcodes.stopped_by(self.signum)
        return exitcodes.OK


class _Output:
    """An output sink whose first failure stops the run (exit code 3). The sink itself keeps
    whole lines only and counts what it could not write."""

    def __init__(self, control: RunControl, sink: Callable[[Any], None]) -> None:
        self.control, self.sink = control, sink

    def __call__(self, event: Any) -> None:
        try:
            self.sink(event)
        except OutputError as e:
            self.control.output_failed(e)

    def __repr__(self) -> str:
        return repr(self.sink)


class _Console:
    """The console: a closed stdout stops the run quietly (exit code 141)."""

    def __init__(self, control: RunControl, sink: Callable[[Any], None]) -> None:
        self.control, self.sink = control, sink

    def __call__(self, event: Any) -> None:
        if self.control.stdout_closed:
            return
        try:
            self.sink(event)
        except BrokenPipeError:
            self.control.stdout_closed = True
            self.control.stop()

    def __repr__(self) -> str:
        return repr(self.sink)


def explain_quiet_run(summary: dict[str, Any], faces_found: int, window_frames: int) -> list[str]:
    """Why a run that ended normally could not find anything (empty when it could)."""
    frames, slots = summary["frames"], summary["slots"]
    if frames == 0:
        return ["no frame was processed"]
    if faces_found == 0:
        return [f"no face was found in any of the {frames} frames: nothing to spot"]
    if summary["windows"] == 0:
        return [f"the face was in view for only {slots} slots ({slots / 60:.2f} s at 60 Hz); "
                f"one window needs {window_frames} ({window_frames / 60:.2f} s): nothing was "
                "scored"]
    return []


def silence_stdout() -> None:
    """stdout's reader is gone: point fd 1 at /dev/null so the interpreter's final flush does
    not print a BrokenPipeError of its own."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a real file (captured): nothing will flush to a pipe
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
