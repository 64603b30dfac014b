"""Input size limits: a file's declared size is checked before anything is allocated or inflated.

The limit is per volume (one NRRD's voxels, one DICOM file's pixels or data set): 2 GB by default,
set with the environment variable ``DOSESEG_MAX_VOLUME_GB`` (e.g. ``DOSESEG_MAX_VOLUME_GB=8``).
A clinical CT of 512 x 512 x 600 int16 voxels is 0.3 GB.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError

LIMIT_VARIABLE = "DOSESEG_MAX_VOLUME_GB"
DEFAULT_LIMIT_GB = 2.0
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole data set is zlib-compressed


def max_volume_bytes() -> int:
    """The size limit of one volume in bytes (``DOSESEG_MAX_VOLUME_GB``, default 2 GB)."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return int(DEFAULT_LIMIT_GB * 1e9)
    try:
        gb = float(text)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and gb > 0):
        raise DoseSegError(f"{LIMIT_VARIABLE}={text!r}: expected a positive number of GB (e.g. 8)")
    return int(gb * 1e9)


def check_size(nbytes: int, path: str | Path, what: str) -> None:
    """Refuse ``nbytes`` (the declared size of ``what`` in ``path``) above the limit."""
    limit = max_volume_bytes()
    if nbytes > limit:
        raise DoseSegError(f"{path}: {what} declares {nbytes / 1e9:.3g} GB, above the {limit / 1e9:g} GB limit per "
                           f"volume (a damaged or hostile file? If it is real, raise {LIMIT_VARIABLE})")


def check_regular_file(path: Path, what: str = "file") -> None:
    """Refuse a path that is missing, or not a regular file (a device, FIFO or socket)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        raise DoseSegError(f"{path}: {what} not found") from None
    if not stat.S_ISREG(mode):
        raise DoseSegError(f"{path}: {what} is not a regular file (a device, pipe or folder)")


def check_dicom_file(path: Path) -> None:
    """Refuse a DICOM file too large to read, or a deflated one (pydicom inflates it whole, whatever its size)."""
    check_regular_file(path, "DICOM file")
    check_size(path.stat().st_size, path, "the DICOM file")
    with open(path, "rb") as handle:
        meta = handle.read(4096)  # the file meta group, where the transfer syntax is
    if DEFLATED.encode() in meta:
        raise DoseSegError(f"{path}: deflated DICOM (transfer syntax {DEFLATED}) is not read: its inflated size is "
                           "not known in advance (convert it, e.g. with dcmconv +te)")


def check_pixels(ds, path: str | Path) -> None:
    """Refuse a DICOM image whose declared pixel data (rows x columns x frames x samples) is above the limit."""
    try:
        count = (int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
                 * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.get("SamplesPerPixel", 1) or 1))
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        raise DoseSegError(f"{path}: Rows, Columns, NumberOfFrames or BitsAllocated is not a whole number") from None
    check_size(count * max(bits, 8) // 8, path, "the pixel data")
