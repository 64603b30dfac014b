"""The CT series: choose one, check its geometry (uniform spacing, one orientation) and read it in HU."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.limits import check_pixels

SPACING_TOL = 0.01  # relative tolerance on the slice spacing


@dataclass
class SeriesGeometry:
    """The grid of a CT series and its slices sorted along the slice normal."""

    slices: list
    grid: Volume  # the CT geometry; its array is a zero-memory placeholder (np.broadcast_to)

    @property
    def series_uid(self) -> str:
        return str(self.slices[0].SeriesInstanceUID)

    @property
    def frame_of_reference(self) -> str:
        return str(self.slices[0].get("FrameOfReferenceUID", ""))


def group_series(headers: Iterable) -> dict[str, list]:
    """CT image headers grouped by SeriesInstanceUID."""
    series: dict[str, list] = defaultdict(list)
    for ds in headers:
        series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    return dict(series)


def _describe(uid: str, slices: list) -> str:
    description = str(slices[0].get("SeriesDescription", "")).strip()
    return f"{uid} ({len(slices)} slices{', ' + description if description else ''})"


def choose_series(folder: Path, series: dict[str, list], wanted: str | None, referenced: set[str]) -> str:
    """The UID of the CT series to use: ``wanted``, the only one, or the one an RTSTRUCT references."""
    if not series:
        raise DoseSegError(f"{folder}: no CT series among the DICOM files")
    listing = "; ".join(_describe(uid, slices) for uid, slices in series.items())
    if wanted is not None:
        if wanted not in series:
            raise DoseSegError(f"{folder}: no CT series {wanted}; found {listing}")
        return wanted
    if len(series) == 1:
        return next(iter(series))
    chosen = [uid for uid in series if uid in referenced]
    if len(chosen) == 1:
        return chosen[0]
    raise DoseSegError(f"{folder}: {len(series)} CT series and no RTSTRUCT naming one of them; "
                       f"choose one with --series UID or by giving one of its files as the patient: {listing}")


def vector_of(ds, keyword: str, size: int) -> np.ndarray:
    """``size`` finite numbers of a multi-valued attribute; a DoseSegError naming the file otherwise."""
    value = ds.get(keyword)
    try:
        vector = np.asarray([float(v) for v in value], dtype=float) if value is not None else np.zeros(0)
    except (TypeError, ValueError):
        vector = np.full(size, np.nan)
    if vector.shape != (size,) or not np.all(np.isfinite(vector)):
        raise DoseSegError(f"{ds.filename}: missing or malformed {keyword} ({value!r}: expected {size} numbers)")
    return vector


def check_orientation(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and normal unit vectors of ImageOrientationPatient, refused unless orthonormal."""
    orientation = vector_of(ds, "ImageOrientationPatient", 6)
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise DoseSegError(f"{ds.filename}: ImageOrientationPatient is not two orthogonal unit vectors")
    return row, col, np.cross(row, col)


def _numbers(ds, keyword: str) -> np.ndarray:
    """The numbers of an attribute (0 when absent); a DoseSegError naming the file when they are not numbers."""
    value = ds.get(keyword, 0)
    try:
        return np.atleast_1d(np.asarray(value, dtype=float))
    except (TypeError, ValueError):
        raise DoseSegError(f"{ds.filename}: malformed {keyword} ({str(value)[:60]!r}: not numbers)") from None


def _same_frame(slices: Sequence, folder: Path) -> None:
    """Refuse slices that differ in orientation, pixel spacing or size."""
    for keyword in ("ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        values = {tuple(np.round(_numbers(s, keyword), 4)) for s in slices}
        if len(values) > 1:
            raise DoseSegError(f"{folder}: the CT slices differ in {keyword}; the series is not one 3D image")


def uniform_positions(positions: np.ndarray, where: str) -> float:
    """The common step of sorted slice positions (mm), refusing duplicates, gaps and uneven steps."""
    if len(positions) < 2:
        return 0.0
    steps = np.diff(positions)
    if np.any(steps < 1e-3):
        k = int(np.argmin(steps))
        raise DoseSegError(f"{where}: two slices at the same position ({positions[k]:.2f} mm); remove the duplicate")
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > SPACING_TOL * step + 1e-3)
    if bad.size:
        k = int(bad[0])
        missing = steps[k] / step - 1
        hint = f" ({missing:.0f} slice(s) missing?)" if abs(missing - round(missing)) < 0.05 and missing > 0.5 else ""
        raise DoseSegError(f"{where}: uneven slice spacing: {steps[k]:.2f} mm between slices at {positions[k]:.2f} "
                           f"and {positions[k + 1]:.2f} mm, {step:.2f} mm elsewhere{hint}; export the complete series")
    return step


def series_geometry(folder: Path, slices: list) -> SeriesGeometry:
    """Sort the slices along their normal and check they form one regular 3D grid."""
    _same_frame(slices, folder)
    row, col, normal = check_orientation(slices[0])
    positions = np.array([vector_of(s, "ImagePositionPatient", 3) for s in slices])
    order = np.argsort(positions @ normal)
    slices, positions = [slices[i] for i in order], positions[order]
    along = positions @ normal
    step = uniform_positions(along, f"{folder}: CT series {slices[0].SeriesInstanceUID}")
    drift = positions - positions[0] - np.outer(along - along[0], normal)  # each slice's in-plane shift
    if step == 0.0:
        step = float(slices[0].get("SpacingBetweenSlices") or slices[0].get("SliceThickness") or 1.0)
    elif np.abs(drift).max() > 0.01 * step + 1e-3:
        raise DoseSegError(f"{folder}: the CT slices are shifted in-plane (gantry tilt); resample the series first")
    pixel = vector_of(slices[0], "PixelSpacing", 2)  # row spacing (along the column direction), column spacing
    if np.any(pixel <= 0):
        raise DoseSegError(f"{slices[0].filename}: PixelSpacing {pixel.tolist()} must be positive")
    shape = (int(slices[0].Columns), int(slices[0].Rows), len(slices))
    grid = Volume(empty_grid(shape), (pixel[1], pixel[0], step), tuple(positions[0]),
                  np.column_stack([row, col, normal]))
    return SeriesGeometry(slices, grid)


def empty_grid(shape: tuple[int, int, int]) -> np.ndarray:
    """A read-only all-False array of ``shape`` taking no memory: a grid's geometry without voxels."""
    return np.broadcast_to(np.False_, shape)


def _number(ds, keyword: str, default: float) -> float:
    """A numeric attribute of a slice, a DoseSegError naming the file when it is not a finite number."""
    value = ds.get(keyword, default)
    try:
        number = float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise DoseSegError(f"{ds.filename}: {keyword} {value!r} is not a number")
    return number


def read_series(geometry: SeriesGeometry) -> Volume:
    """The CT in HU (RescaleSlope/Intercept applied): int16 when exact, float32 otherwise."""
    import pydicom

    slices = geometry.slices
    ni, nj, nk = geometry.grid.shape
    slopes = np.array([_number(s, "RescaleSlope", 1.0) for s in slices])
    intercepts = np.array([_number(s, "RescaleIntercept", 0.0) for s in slices])
    integral = np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts))
    hu = np.empty((nk, nj, ni), dtype=np.float32)  # filled slice by slice in memory order, transposed at the end
    for k, header in enumerate(slices):
        check_pixels(header, header.filename)  # before decoding: compressed pixels may declare any size
        try:
            pixels = pydicom.dcmread(header.filename, force=True).pixel_array
        except Exception as exc:  # pydicom raises many types for compressed or damaged pixel data
            raise DoseSegError(f"{header.filename}: cannot decode the pixel data ({exc}); "
                               "decompress the series (e.g. gdcmconv --raw) and try again") from exc
        if pixels.shape != (nj, ni):
            raise DoseSegError(f"{header.filename}: pixel data {pixels.shape} does not match Rows x Columns")
        hu[k] = pixels * slopes[k] + intercepts[k]
    if integral and hu.min() >= -32768 and hu.max() <= 32767:
        hu = hu.astype(np.int16)
    return geometry.grid.with_array(np.ascontiguousarray(hu.transpose(2, 1, 0)))
