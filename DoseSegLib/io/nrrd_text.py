"""Non-ASCII text in NRRD headers (a structure name such as ``Mâchoire``), written as 3D Slicer writes it.

3D Slicer writes the key/value pairs of its NRRD files (a segment's ``SegmentN_ID`` and ``SegmentN_Name``
included) as the UTF-8 bytes of its strings, and reads them back as UTF-8 (vtkMRMLSegmentationStorageNode
through teem's NRRD writer). pynrrd, which slicerio writes with, encodes the header as ASCII and raises
UnicodeEncodeError on anything else; it reads headers as ASCII, dropping other bytes. Here: the header is
written by pynrrd with ASCII stand-ins, then the stand-ins' lines get the UTF-8 values; headers are read
as UTF-8.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from DoseSegLib.core.names import CONTROL

__all__ = ["ascii_values", "decode_header", "one_line", "write_with_utf8"]

def one_line(value: object) -> str:
    """``value`` as text on one header line (control characters, newlines included, become spaces)."""
    return CONTROL.sub(" ", str(value))


def ascii_values(fields: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``fields`` with ASCII stand-ins for the non-ASCII values, and those values by key (for
    :func:`write_with_utf8`)."""
    utf8 = {key: value for key, value in fields.items() if not value.isascii()}
    stand_ins = {key: value.encode("ascii", "backslashreplace").decode("ascii") if key in utf8 else value
                 for key, value in fields.items()}
    return stand_ins, utf8


def write_with_utf8(path: str | Path, write: Callable[[str | BinaryIO], object], utf8: Mapping[str, str]) -> None:
    """Write a NRRD file with ``write`` (pynrrd or slicerio, given a file name or a binary file), then give the
    key/value pairs named in ``utf8`` (written by ``write`` with ASCII stand-ins) their UTF-8 values."""
    if not utf8:
        write(str(path))
        return
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getvalue()
    end = data.index(b"\n\n") + 1  # pynrrd writes "\n" line ends and one blank line before the data
    lines = data[:end].split(b"\n")
    keys = {key.encode("ascii") + b":=": value for key, value in utf8.items()}
    found = set()
    for i, line in enumerate(lines):
        key = line[: line.find(b":=") + 2]
        if key in keys:
            lines[i] = key + one_line(keys[key]).encode("utf-8")
            found.add(key)
    missing = [key.decode() for key in keys if key not in found]
    if missing:
        raise ValueError(f"{path}: the NRRD writer wrote no key/value pair {', '.join(missing)}")
    Path(path).write_bytes(b"\n".join(lines) + data[end:])


def decode_header(lines: bytes) -> list[str]:
    """A NRRD header's bytes as lines of text for pynrrd: UTF-8 (as Slicer writes it; another byte is
    replaced by U+FFFD rather than dropped), split at line feeds only (NRRD's line end: a value may hold a form
    feed or U+2028, which ``str.splitlines`` would take for line ends)."""
    return lines.decode("utf-8", "replace").split("\n")
