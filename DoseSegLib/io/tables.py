"""Plain tables (lists of dicts) to and from CSV files, with no pandas dependency."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from DoseSegLib.core.errors import DoseSegError

__all__ = ["Row", "columns_of", "format_value", "read_csv", "write_csv"]

Row = dict[str, Any]
"""One table row: column name -> cell (text, number or None). Most tables have open-ended columns (one per DVH
metric, V_x or feature), so a cell's type is known only to the code that names the column."""


def format_value(value: Any, digits: int = 7) -> str:
    """A cell as text: floats with ``digits`` significant digits, None and NaN as empty."""
    if value is None:
        return ""
    if isinstance(value, float) or hasattr(value, "dtype"):
        number = float(value)
        return "" if math.isnan(number) else f"{number:.{digits}g}"
    return str(value)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # OWASP CSV injection: what makes a spreadsheet read a formula


def neutralise(text: str) -> str:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'`` (OWASP's rule); numbers
    (``-3.5``, ``+1e-3``) and every other text are kept as they are."""
    if not text.startswith(_FORMULA):
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text


def columns_of(rows: Iterable[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    """``first`` followed by every other key of ``rows`` in order of first appearance."""
    columns = list(first)
    seen = set(columns)
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return columns


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
              digits: int = 7) -> None:
    """Write ``rows`` as a CSV file; keys missing from a row become empty cells, and text a spreadsheet
    would take for a formula is neutralised (:func:`neutralise`).

    Args:
        path: output file.
        rows: one dict per row.
        columns: column order (default: keys in order of first appearance).
        digits: significant digits of floating-point cells.
    """
    columns = list(columns) if columns is not None else columns_of(rows)
    # UTF-8 without a byte order mark, although Excel on Windows then shows "Mâchoire" as "MÃ¢choire" (its
    # Data > From Text/CSV import, file origin UTF-8, reads it right): Python's csv module with encoding "utf-8"
    # (OpenKBP-style scripts, our tests) and R's read.csv would take a BOM into the first column's name;
    # read_csv, the names-map reader and Slicer's table reader (vtkMRMLTableStorageNode) accept either.
    with open(path, "w", newline="", encoding="utf-8") as handle:  # names are data: any script, whatever the locale
        writer = csv.writer(handle)
        writer.writerow([neutralise(str(column)) for column in columns])
        for row in rows:
            writer.writerow([neutralise(format_value(row.get(column), digits)) for column in columns])


def read_csv(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Read a CSV file with a header line into a list of dicts of strings.

    Args:
        path: the file.
        required: column names that must be present.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # as written; a spreadsheet's BOM ignored
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DoseSegError(f"{path}: cannot read CSV ({exc})") from exc
    missing = [column for column in required if column not in header]
    if missing:
        raise DoseSegError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows
