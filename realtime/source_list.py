"""``fesnet-spot run --sources FILE``: a list of sources, one per line, read with bounds.

The file is an operator's text file, so whatever it names must not be able to hang or exhaust
the command before any work starts: it must be a regular file (a device such as /dev/urandom
or /dev/zero, a FIFO or a socket never ends or blocks), at most ``MAX_BYTES`` long and of at
most ``MAX_LINES`` lines, UTF-8 text. Blank lines and lines starting with ``#`` are skipped; a
file with nothing else names no source and is refused (it would otherwise fall back to the
bundled sample clip). Every refusal is a :class:`SourceListError` (a ValueError: the CLI's
usage error, exit code 2) naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_LINES = 1000
MAX_BYTES = 64 * 1024
HELP = (
    "a text file with one source per line (several streams; blank lines and # comments "
    f"skipped): a regular file of at most {MAX_LINES} lines and {MAX_BYTES // 1024} KiB"
)


class SourceListError(ValueError):
    """A ``--sources`` file that cannot be used (the message names it and says why)."""


def read_source_list(path: str | Path) -> list[str]:
    """The sources ``path`` lists, in order (module docstring: the bounds and the refusals)."""
    where = f"--sources {path}"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise SourceListError(f"cannot read {where}: {e.strerror or e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SourceListError(f"{where} is a directory: give a text file of sources")
        if not stat.S_ISREG(mode):
            raise SourceListError(f"{where} is not a regular file (a device, FIFO or socket): "
                                  "give a text file of sources")
        data = _read_at_most(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise SourceListError(f"{where} is larger than {MAX_BYTES // 1024} KiB: a sources file "
                              f"lists at most {MAX_LINES} lines")
    if b"\0" in data:
        raise SourceListError(f"{where} is not a text file (it holds NUL bytes)")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SourceListError(f"{where} is not UTF-8 text: {e.reason} at byte {e.start}") from e
    if len(lines) > MAX_LINES:
        raise SourceListError(f"{where} has {len(lines)} lines: at most {MAX_LINES}")
    sources = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not sources:
        raise SourceListError(f"no sources in {path} (only blank lines and # comments)")
    return sources


def _read_at_most(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left > 0 and (chunk := os.read(fd, min(left, 65536))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
