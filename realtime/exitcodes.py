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
import os
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
    nothing (only the main thread receives signals).

    Also around a library call that installs stop-signal handlers of its own (``ray.init``
    makes SIGTERM exit with code 15 while it starts, and its last step installs Ray's C++
    failure handler, which aborts with a stack dump; a Ray node drains and exits 1): a stop
    signal that reaches such a Python handler inside the block ends the block as one that
    reached ours would (the signal numbers Python saw are read from a wakeup pipe), and the
    handlers in force before are set again afterwards, which also removes one set in C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, raise_stopped),
    }
    seen, told = os.pipe()
    os.set_blocking(seen, False)
    os.set_blocking(told, False)
    old_wakeup = signal.set_wakeup_fd(told, warn_on_full_buffer=False)
    try:
        yield
    except (KeyboardInterrupt, Stopped):
        raise
    except BaseException as e:  # a library's handler ended the block its own way
        stop = _stop_seen(seen)
        if stop is None:
            raise
        raise stop from e
    else:
        stop = _stop_seen(seen)
        if stop is not None:  # a library's handler swallowed it
            raise stop
    finally:
        signal.set_wakeup_fd(old_wakeup)
        os.close(seen)
        os.close(told)
        for signum, handler in old.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _stop_seen(wakeup: int) -> BaseException | None:
    """The stop (KeyboardInterrupt or :class:`Stopped`) for the first SIGINT or SIGTERM whose
    number Python wrote to the ``wakeup`` pipe, if any."""
    try:
        numbers = os.read(wakeup, 4096)
    except BlockingIOError:
        return None
    for number in numbers:
        if number == signal.SIGINT:
            return KeyboardInterrupt()
        if number == signal.SIGTERM:
            return Stopped(number)
    return None
