"""CAS(ME)^2 loader (long videos, 30 FPS) for the published layout.

Layout::

    root/rawpic/s15/15_0101disgustingteeth/img1.jpg ...        frames, imgK.jpg with K from 1
    root/CAS(ME)^2code_final.xlsx (or labels_path)            labels

Label workbook: sheet 0 has no header; columns are subject id, clip name (e.g. ``anger1_1``), onset,
apex, offset, AUs, emotion, type (``macro-expression`` / ``micro-expression``), self-report.
Sheet 1 ("naming rule1") maps subject folders to ids: (``s15``, 15, subject id); sheet 2
("naming rule2") maps expression codes to clip names: (``0401`` or 401, ``anger1``). The clip
``anger1_1`` of subject id ``i`` is the folder ``rawpic/s15/15_0401*``.

Onset/apex/offset are frame numbers as in the file names; rows with offset 0 (apex only) are
completed by :func:`~fesnet.model.data.common.resolve_offset`.
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

FPS = 30.0
_FRAME_RE = re.compile(r"^img(\d+)\.jpe?g$", re.IGNORECASE)
_VIDEO_RE = re.compile(r"^(\d+)_(\d{4})")


def _label_of(value: object, where: str) -> int:
    text = str(value).strip().lower()
    if text.startswith("macro"):
        return LABEL_MAE
    if text.startswith("micro"):
        return LABEL_ME
    raise DatasetError(f"{where}: type must be macro-expression or micro-expression, got {value!r}")


def _subject_folder(rawpic: Path, row: list[object]) -> str:
    """The rawpic folder named by a naming-rule-1 row: ``s15`` in column 0, else ``s`` + column 1.

    Copies of the workbook differ in which column holds the folder name; the one that exists wins.
    """
    first = str(row[0]).strip()
    candidates = [first, str(row[1]).strip()]
    if isinstance(row[1], (int, float)) or str(row[1]).strip().isdigit():
        candidates.append(f"s{int(float(str(row[1])))}")
    for name in candidates:
        if (rawpic / name).is_dir():
            return name
    return first


def _find_labels(root: Path) -> Path:
    candidates = sorted(root.glob("*code_final*.xlsx")) or sorted(root.glob("*.xlsx"))
    if not candidates:
        raise DatasetError(f"no label xlsx (CAS(ME)^2code_final.xlsx) found in {root}")
    return candidates[0]


def _frames(folder: Path) -> tuple[list[Path], list[int]]:
    numbered = []
    for p in folder.iterdir():
        m = _FRAME_RE.match(p.name)
        if m:
            numbered.append((int(m.group(1)), p))
    numbered.sort()
    return [p for _, p in numbered], [n for n, _ in numbered]


def _naming_rules(
    xlsx: Path, rawpic: Path, rule1_rows: list[list[Any]], rule2_rows: list[list[Any]]
) -> tuple[dict[int, str], dict[str, str]]:
    """Sheets 1-2: subject id -> its rawpic folder name, clip name -> its expression code."""
    subject_folder: dict[int, str] = {}
    for r, row in enumerate(rule1_rows):
        if is_blank(row):
            continue
        if len(row) < 3:
            raise DatasetError(f"{xlsx} naming rule1 row {r + 1}: expected 3 columns, got {row}")
        where = f"{xlsx} naming rule1 row {r + 1}"
        subject_folder[as_int(row[2], "subject id", where)] = _subject_folder(rawpic, row)
    clip_code: dict[str, str] = {}
    for r, row in enumerate(rule2_rows):
        if is_blank(row):
            continue
        if len(row) < 2:
            raise DatasetError(f"{xlsx} naming rule2 row {r + 1}: expected 2 columns, got {row}")
        code = as_int(row[0], "expression code", f"{xlsx} naming rule2 row {r + 1}")
        clip_code[str(row[1]).strip().lower()] = f"{code:04d}"
    return subject_folder, clip_code


def _video_folders(rawpic: Path) -> dict[tuple[str, str], Path]:
    """(subject folder, expression code) -> the video's frame folder, for every sNN/NN_CODEname."""
    videos: dict[tuple[str, str], Path] = {}
    for subject_dir in sorted(p for p in rawpic.iterdir() if p.is_dir()):
        for video_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            m = _VIDEO_RE.match(video_dir.name)
            if m:
                videos[(subject_dir.name, m.group(2))] = video_dir
    if not videos:
        raise DatasetError(f"no video folders (sNN/NN_CODEname) found under {rawpic}")
    return videos


def load_records(root: Path | str, labels_path: Path | str | None = None) -> list[VideoRecord]:
    """All CAS(ME)^2 videos under ``root`` with their labelled intervals (0-based frames)."""
    root = Path(root)
    rawpic = root / "rawpic"
    if not rawpic.is_dir():
        raise DatasetError(f"CAS(ME)^2 frames folder not found: {rawpic}")
    xlsx = Path(labels_path) if labels_path is not None else _find_labels(root)
    sheets = list(read_sheets(xlsx).items())
    if len(sheets) < 3:
        raise DatasetError(
            f"{xlsx}: expected 3 sheets (labels, naming rule1, naming rule2), found {len(sheets)}"
        )
    (_, label_rows), (_, rule1_rows), (_, rule2_rows) = sheets[:3]
    subject_folder, clip_code = _naming_rules(xlsx, rawpic, rule1_rows, rule2_rows)
    videos = _video_folders(rawpic)

    intervals: dict[Path, list[tuple[int, int, int]]] = {v: [] for v in videos.values()}
    frame_cache: dict[Path, tuple[list[Path], list[int]]] = {}
    n_completed = 0
    for r, row in enumerate(label_rows):
        if is_blank(row):
            continue
        where = f"{xlsx} sheet 0 row {r + 1}"
        if len(row) < 8:
            raise DatasetError(f"{where}: expected >= 8 columns (subject..type), got {len(row)}")
        subject_id = as_int(row[0], "subject", where)
        clip = str(row[1]).strip().lower()
        onset = as_int(row[2], "onset", where)
        apex = as_int(row[3], "apex", where)
        offset = as_int(row[4], "offset", where)
        label = _label_of(row[7], where)
        if subject_id not in subject_folder:
            raise DatasetError(f"{where}: subject {subject_id} is not in naming rule1")
        clip_name = clip.rsplit("_", 1)[0] if "_" in clip else clip
        if clip_name not in clip_code:
            raise DatasetError(f"{where}: clip {clip!r} is not in naming rule2")
        key = (subject_folder[subject_id], clip_code[clip_name])
        if key not in videos:
            raise DatasetError(
                f"{where}: label references a missing video rawpic/{key[0]}/*_{key[1]}*"
            )
        folder = videos[key]
        if folder not in frame_cache:
            frame_cache[folder] = _frames(folder)
        numbers = frame_cache[folder][1]
        if not numbers:
            raise DatasetError(f"{where}: video folder {folder} has no imgK.jpg frames")
        interval, completed = label_row_interval(numbers, onset, apex, offset, label)
        n_completed += completed
        intervals[folder].append(interval)
    if n_completed:
        logger.info("CAS(ME)^2: completed %d label rows without an offset", n_completed)

    records = []
    for (subject, _), folder in sorted(videos.items()):
        frames = frame_cache.get(folder) or _frames(folder)
        if not frames[0]:
            logger.warning("CAS(ME)^2: %s has no frames, skipped", folder)
            continue
        records.append(
            VideoRecord(
                video_id=f"casme2/{subject}/{folder.name}",
                subject=subject,
                fps=FPS,
                frames=frames[0],
                intervals=sorted(intervals[folder]),
                dataset="casme2",
            )
        )
    return records
