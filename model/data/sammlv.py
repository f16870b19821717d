"""SAMM-LV (SAMM Long Videos, 200 FPS) loader for the published layout.

Layout::

    root/006_1/006_1_0001.jpg ...           frames: <subject>_<video>/<subject>_<video>_<number>.jpg
    root/SAMM_LongVideos_*.xlsx (or labels_path)

The workbook has a few title rows above the table; the header row contains Subject, Filename,
Inducement Code, Onset, Apex, Offset, Duration, Type (``Macro`` / ``Micro - 1/2``), Action Units,
Notes. ``Filename`` is ``<subject>_<video>_<expression>`` (e.g. ``006_1_2``): its first two parts
name the video folder. Onset/apex/offset are frame numbers as in the file names; rows with offset
-1 (apex only) are completed by :func:`~fesnet.model.data.common.resolve_offset`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from .common import (
    LABEL_MAE,
    LABEL_ME,
    DatasetError,
    VideoRecord,
    label_row_interval,
)
from .xlsx import as_int, is_blank, read_sheets

logger = logging.getLogger(__name__)

FPS = 200.0
REQUIRED_COLUMNS = ("subject", "filename", "onset", "apex", "offset", "type")
_VIDEO_DIR_RE = re.compile(r"^(\d+)_(\d+)$")
_HEADER_SEARCH_ROWS = 30


def _norm(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip().lower() if value is not None else ""


def _label_of(value: object, where: str) -> int:
    text = _norm(value)
    if text.startswith("macro"):
        return LABEL_MAE
    if text.startswith("micro"):
        return LABEL_ME
    raise DatasetError(f"{where}: Type must be Macro or Micro, got {value!r}")


def _find_table(xlsx: Path) -> tuple[str, int, dict[str, int], list[list[Any]]]:
    """(sheet, header row index, column name -> index, rows) of the first sheet with the table."""
    for sheet, rows in read_sheets(xlsx).items():
        for r, row in enumerate(rows[:_HEADER_SEARCH_ROWS]):
            names = {_norm(v): c for c, v in enumerate(row) if _norm(v)}
            if all(col in names for col in REQUIRED_COLUMNS):
                return sheet, r, names, rows
    raise DatasetError(
        f"{xlsx}: no sheet has a header row with columns {', '.join(REQUIRED_COLUMNS)} "
        f"(searched the first {_HEADER_SEARCH_ROWS} rows of each sheet)"
    )


def _frames(folder: Path) -> tuple[list[Path], list[int]]:
    numbered = []
    prefix = folder.name + "_"
    for p in folder.iterdir():
        if p.suffix.lower() in (".jpg", ".jpeg") and p.stem.startswith(prefix):
            tail = p.stem[len(prefix) :]
            if tail.isdigit():
                numbered.append((int(tail), p))
    numbered.sort()
    return [p for _, p in numbered], [n for n, _ in numbered]


def load_records(root: Path | str, labels_path: Path | str | None = None) -> list[VideoRecord]:
    """All SAMM-LV videos under ``root`` with their labelled intervals (0-based frames)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"SAMM-LV folder not found: {root}")
    if labels_path is None:
        candidates = sorted(root.glob("SAMM_LongVideos*.xlsx")) or sorted(root.glob("*.xlsx"))
        if not candidates:
            raise DatasetError(f"no label xlsx (SAMM_LongVideos_*.xlsx) found in {root}")
        xlsx = candidates[0]
    else:
        xlsx = Path(labels_path)
    sheet, header_row, cols, rows = _find_table(xlsx)

    videos = {
        p.name: p for p in sorted(root.iterdir()) if p.is_dir() and _VIDEO_DIR_RE.match(p.name)
    }
    if not videos:
        raise DatasetError(f"no video folders (NNN_K) found in {root}")
    frames = {name: _frames(folder) for name, folder in videos.items()}
    intervals: dict[str, list[tuple[int, int, int]]] = {name: [] for name in videos}
    n_completed = 0
    for r in range(header_row + 1, len(rows)):
        row = rows[r]
        if is_blank(row):
            continue
        where = f"{xlsx} sheet {sheet!r} row {r + 1}"

        def cell(name: str, row: list[Any] = row) -> Any:
            c = cols[name]
            return row[c] if c < len(row) else None

        filename = str(cell("filename") or "").strip()
        parts = filename.split("_")
        if len(parts) < 2:
            raise DatasetError(f"{where}: Filename {filename!r} is not <subject>_<video>_<n>")
        video = f"{parts[0]}_{parts[1]}"
        if video not in videos:
            raise DatasetError(f"{where}: label references a missing video folder {root / video}")
        onset = as_int(cell("onset"), "Onset", where)
        apex = as_int(cell("apex"), "Apex", where)
        offset = as_int(cell("offset"), "Offset", where)
        label = _label_of(cell("type"), where)
        numbers = frames[video][1]
        if not numbers:
            raise DatasetError(f"{where}: video folder {videos[video]} has no frames")
        interval, completed = label_row_interval(numbers, onset, apex, offset, label)
        n_completed += completed
        intervals[video].append(interval)
    if n_completed:
        logger.info("SAMM-LV: completed %d label rows without an offset", n_completed)

    records = []
    for name, folder in videos.items():
        paths = frames[name][0]
        if not paths:
            logger.warning("SAMM-LV: %s has no frames, skipped", folder)
            continue
        records.append(
            VideoRecord(
                video_id=f"sammlv/{name}",
                subject=name.split("_")[0],
                fps=FPS,
                frames=paths,
                intervals=sorted(intervals[name]),
                dataset="sammlv",
            )
        )
    return records
