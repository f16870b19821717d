"""Exit codes of every ``fesnet-spot`` command (README "Exit codes", docs/EVENTS.md).

A supervisor can tell from the code alone whether a run finished, failed, was refused before it
started, lost an output, or was stopped:

====  =====================================================================================
0     done: the source ended and every output was written (servers: stopped by SIGINT or
      SIGTERM, which is how a server ends)
1     failed while running (the engine, the aligner, a source that broke mid-stream, such
      as a live source gone after its reconnect attempts; a connection refused or lost, such
      as a Ray cluster that does not answer)
2     refused before any work: a bad source, checkpoint, merger config, option value,
      output path, port, server URL or cluster request (one line on stderr says which and
      what to do)
3     an output could not be written during the run (disk full, file size limit, a video
      the codec could not write): the run stops, the summary is still printed
130   stopped by SIGINT (Ctrl-C); 143: stopped by SIGTERM; 141: stdout was closed (a pipe
      reader such as ``| head`` went away). 128 + the signal number, as shells report it
====  =====================================================================================
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

OK = 0
FAILED = 1
BAD_INPUT = 2
OUTPUT_FAILED = 3
STDOUT_CLOSED = 128 + signal.SIGPIPE


def stopped_by(signum: int) -> int:
    """The exit code of a run stopped by signal ``signum`` (128 + N)."""
    return 128 + int(signum)


class Stopped(BaseException):
    """Raised in the main thread by a stop signal that arrives before a command installed its
    own handler (start-up: imports, loading the model). A BaseException like
    KeyboardInterrupt, so no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = int(signum)


def raise_stopped(signum: int, _frame: object) -> None:
    """A signal handler: turn SIGTERM into :class:`Stopped` (SIGINT already raises
    KeyboardInterrupt)."""
    raise Stopped(signum)


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, on the main thread, SIGINT raises KeyboardInterrupt and SIGTERM
    :class:`Stopped`, whatever handlers the command has installed (they are back after it).
    For a bounded wait during start-up that no stop flag can end (joining a cluster, waiting
    for its model tier): Ctrl-C ends it at once, exit code 130 / 143. Elsewhere it does
    nothing (only the main thread receives signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, raise_stopped),
    }
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
