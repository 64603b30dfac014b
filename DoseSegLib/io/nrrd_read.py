"""NRRD files read defensively: pynrrd parses the header, the voxels are read here within bounds.

pynrrd (1.1) follows ``data file:`` anywhere (an absolute path, ``..``, /dev/urandom), inflates
a gzip stream whole whatever the header declares, and skips ``line skip`` lines one by one. Here:

- the header must end within 1 MB; ``dimension`` 3 (4 for segmentations), sizes positive;
- the declared size is checked against :func:`DoseSegLib.io.limits.max_volume_bytes` before
  anything is allocated, and decompression stops past the declared size;
- a detached data file must be a regular file in the header's own folder (no absolute path,
  no ``..``, no link out of the folder, no device);
- ``line skip`` above 1024 and ``byte skip`` past the end of the file are refused.
"""

from __future__ import annotations

import bz2
import zlib
from io import BufferedReader
from pathlib import Path
from typing import Any

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.limits import check_regular_file, check_size, max_volume_bytes
from DoseSegLib.io.nrrd_text import decode_header

MAX_HEADER_BYTES = 1 << 20
MAX_LINE_SKIP = 1024
MAX_SKIPPED_LINE = 1 << 16
_CHUNK = 1 << 20
_COMPRESSED = {"gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
_TEXT = {"ascii", "text", "txt"}


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed header of a NRRD file and the offset of its attached data."""
    import nrrd  # type: ignore[import-untyped]

    check_regular_file(path)
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES + 1)
    if not head.startswith(b"NRRD"):
        raise DoseSegError(f"{path}: unreadable or truncated NRRD (not a NRRD file: no 'NRRD000x' at its start)")
    ends = [i + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (i := head.find(sep)) >= 0]
    if ends:
        end = min(ends)
    elif len(head) <= MAX_HEADER_BYTES:
        end = len(head)  # a detached header (.nhdr): the whole file
    else:
        raise DoseSegError(f"{path}: NRRD header longer than {MAX_HEADER_BYTES // (1 << 20)} MB (damaged file?)")
    try:
        header = nrrd.read_header(decode_header(head[:end]))  # UTF-8 key/values, as Slicer writes them
    except (nrrd.NRRDError, ValueError, TypeError, IndexError, KeyError, OverflowError, StopIteration) as exc:
        raise DoseSegError(f"{path}: unreadable or truncated NRRD (header: {exc or type(exc).__name__})") from exc
    return header, end


def _integer(header: dict, keys: tuple[str, ...], default: int, path: Path) -> int:
    value = next((header[k] for k in keys if k in header), default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DoseSegError(f"{path}: NRRD field '{keys[-1]}' is not a whole number ({value!r})") from None


def _data_file(header: dict, path: Path) -> Path | None:
    """The detached data file, refused unless it is a regular file in the header's own folder."""
    name = header.get("data file", header.get("datafile"))
    if name is None:
        return None
    text = str(name).strip()
    if text.upper().startswith("LIST") or " " in text or "%" in text:
        raise DoseSegError(f"{path}: NRRD data split over several files ('data file: {text}') is not supported")
    relative = Path(text)
    if relative.is_absolute() or ".." in relative.parts or relative.name != text:
        raise DoseSegError(f"{path}: NRRD 'data file: {text}' is not a file in the header's own folder (no absolute "
                           "paths, no '..', no sub-folders)")
    data = path.parent / relative
    if data.resolve().parent != path.resolve().parent:
        raise DoseSegError(f"{path}: NRRD 'data file: {text}' links out of the header's folder")
    if not data.is_file():
        raise DoseSegError(f"{path}: NRRD 'data file: {text}' is missing or not a regular file (a device, pipe "
                           "or folder)")
    return data


def _skip_lines(handle: BufferedReader, count: int, path: Path) -> None:
    for _ in range(count):
        line = handle.readline(MAX_SKIPPED_LINE)
        if not line:
            raise DoseSegError(f"{path}: 'line skip' goes past the end of the data")


def _inflate(handle: BufferedReader, encoding: str, cap: int, path: Path) -> bytearray:
    """Decompress the rest of ``handle``, refusing more than ``cap`` bytes of output."""
    gzip = encoding == "gzip"
    decoder: Any = zlib.decompressobj(zlib.MAX_WBITS | 32) if gzip else bz2.BZ2Decompressor()
    out = bytearray()
    try:
        while not decoder.eof and (chunk := handle.read(_CHUNK)):
            while True:
                out += decoder.decompress(chunk, cap + 1 - len(out))
                if len(out) > cap:
                    raise DoseSegError(f"{path}: unreadable or truncated NRRD (its compressed data inflates past the "
                                       "size its header declares)")
                chunk = decoder.unconsumed_tail if gzip else b""
                if (gzip and not chunk) or (not gzip and (decoder.needs_input or decoder.eof)):
                    break
    except (zlib.error, OSError, EOFError) as exc:
        raise DoseSegError(f"{path}: unreadable or truncated NRRD (corrupt {encoding} data: {exc})") from exc
    return out


def _read_text(handle: BufferedReader, count: int, dtype: np.dtype, path: Path) -> np.ndarray:
    tokens = handle.read(count * 48 + _CHUNK).split()
    if len(tokens) < count:
        raise DoseSegError(f"{path}: NRRD holds {len(tokens)} values, its header declares {count}")
    try:
        return np.asarray([float(t) for t in tokens[:count]]).astype(dtype)
    except ValueError as exc:
        raise DoseSegError(f"{path}: NRRD text data is not numbers ({exc})") from None


def _payload(handle: BufferedReader, header: dict, dtype: np.dtype, count: int, path: Path) -> np.ndarray:
    encoding = str(header.get("encoding", "")).lower()
    nbytes = count * dtype.itemsize
    _skip_lines(handle, _integer(header, ("lineskip", "line skip"), 0, path), path)
    skip = _integer(header, ("byteskip", "byte skip"), 0, path)
    if skip < -1 or skip > max_volume_bytes():
        raise DoseSegError(f"{path}: NRRD 'byte skip: {skip}' is out of range")
    if encoding == "raw":
        try:
            handle.seek(-nbytes if skip == -1 else skip, 2 if skip == -1 else 1)
        except OSError:
            raise DoseSegError(f"{path}: unreadable or truncated NRRD (shorter than the data it declares)") from None
        values = np.empty(count, dtype)
        read = handle.readinto(values.data.cast("B"))
        if read != nbytes:
            raise DoseSegError(f"{path}: unreadable or truncated NRRD ({read} bytes of data, "
                               f"the header declares {nbytes})")
        return values
    if encoding in _TEXT:
        return _read_text(handle, count, dtype, path)
    if encoding not in _COMPRESSED:
        raise DoseSegError(f"{path}: NRRD encoding '{encoding}' is not supported (raw, gzip, bzip2 or ascii)")
    raw = _inflate(handle, _COMPRESSED[encoding], skip + nbytes if skip >= 0 else max_volume_bytes(), path)
    data = memoryview(raw)[-nbytes:] if skip == -1 else memoryview(raw)[skip:]
    if len(data) != nbytes:
        raise DoseSegError(f"{path}: unreadable or truncated NRRD ({len(data)} bytes of data, the header declares "
                           f"{nbytes})")
    return np.frombuffer(data, dtype)


def read_nrrd(path: str | Path, dimensions: tuple[int, ...] = (3,)) -> tuple[np.ndarray, dict[str, Any]]:
    """Voxels (x fastest, as pynrrd's ``index_order='F'``) and header of a NRRD file, within the limits."""
    import nrrd  # type: ignore[import-untyped]

    path = Path(path)
    header, offset = read_header(path)
    data_file = _data_file(header, path)
    if "sizes" not in header or "type" not in header or "encoding" not in header:
        raise DoseSegError(f"{path}: unreadable or truncated NRRD (its header lacks type, sizes or encoding)")
    sizes = [int(n) for n in np.atleast_1d(header["sizes"])]
    if len(sizes) not in dimensions or _integer(header, ("dimension",), 0, path) != len(sizes):
        raise DoseSegError(f"{path}: expected a {' or '.join(map(str, dimensions))}D image, found {len(sizes)}D with "
                           f"sizes {sizes}")
    if min(sizes) < 1:
        raise DoseSegError(f"{path}: NRRD sizes {sizes} must all be positive")
    try:
        dtype = np.dtype(nrrd.reader._determine_datatype(header))
    except (nrrd.NRRDError, KeyError, TypeError) as exc:
        raise DoseSegError(f"{path}: unsupported NRRD type ({exc})") from exc
    count = int(np.prod(sizes, dtype=object))
    check_size(count * dtype.itemsize, path, f"the image ({' x '.join(map(str, sizes))} {dtype.name})")
    with open(data_file or path, "rb") as handle:
        if data_file is None:
            handle.seek(offset)
        values = _payload(handle, header, dtype, count, path)
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    return values.reshape(sizes, order="F"), header
