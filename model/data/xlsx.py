"""Minimal xlsx reading for the dataset label sheets (openpyxl, values only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import DatasetError


def read_sheets(path: Path) -> dict[str, list[list[Any]]]:
    """All sheets of an xlsx as {name: rows of cell values}, in workbook order.

    Raises DatasetError when the file is missing or is not a readable xlsx workbook.
    """
    from openpyxl import load_workbook

    if not path.is_file():
        raise DatasetError(f"label file not found: {path}")
    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types (zip, xml, key errors) for bad files
        raise DatasetError(f"cannot read label file {path}: {exc}") from exc
    try:
        return {
            ws.title: [list(row) for row in ws.iter_rows(values_only=True)]
            for ws in workbook.worksheets
        }
    finally:
        workbook.close()


def is_blank(row: list[Any]) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in row)


def as_int(value: Any, what: str, where: str) -> int:
    """A cell holding a whole number (int, float 12.0 or "12"); DatasetError otherwise."""
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {what} is not a number: {value!r}") from None
    if number != int(number):
        raise DatasetError(f"{where}: {what} is not a whole number: {value!r}")
    return int(number)
