"""Output paths checked before any work starts, and the error raised when one fails later.

A run that loads a model, reads a whole video and only then finds that ``--events`` points into
/proc, ``--video-out`` into a read-only folder or ``--plot`` at a directory wastes the run and
loses its results. :func:`check_writable` finds that in milliseconds, before the model loads.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class OutputError(OSError):
    """An output file cannot be created or written (CLI: exit code 2 before the run, 3 during)."""


def check_writable(path: Path, what: str) -> None:
    """Raise OutputError unless ``path`` can be created (or appended to) as a regular file.
    Leaves no file behind that was not there before; missing parent folders are created."""
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file name")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {what} {path}: {e.strerror or e}") from e
    if not existed:
        with contextlib.suppress(OSError):
            path.unlink()
