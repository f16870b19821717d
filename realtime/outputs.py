"""Output paths checked before any work starts, and the error raised when one fails later.

A run that loads a model, reads a whole video and only then finds that ``--events`` points into
/proc, ``--video-out`` into a read-only folder or ``--plot`` at a directory wastes the run and
loses its results. :func:`check_writable` (and :func:`check_plot_path` for an image type
matplotlib can write) finds that in milliseconds, before the model loads.
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


def check_plot_path(path: Path) -> None:
    """OutputError unless a timeline image can be written at ``path``."""
    from matplotlib.figure import Figure

    check_writable(path, "plot")
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in Figure().canvas.get_supported_filetypes():
        raise OutputError(f"cannot write the plot {path}: unknown image type {path.suffix!r} "
                          "(use .png, .pdf or .svg)")
