"""RTDOSE in: the dose grid (GridFrameOffsetVector, relative or absolute), DoseGridScaling, units."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.series import vector_of, check_orientation, uniform_positions
from DoseSegLib.io.limits import check_pixels

log = logging.getLogger(__name__)

PLAN_SUMS = ("PLAN", "PLAN_OVERVIEW")  # a whole plan's dose (PLAN_OVERVIEW references no RTPLAN)


@dataclass
class RtDose:
    """A dose grid as stored: values already multiplied by DoseGridScaling."""

    volume: Volume
    units: str  # GY or RELATIVE
    summation: str  # PLAN, BEAM, FRACTION, ...
    scaling: float
    frame_of_reference: str


def _frame_offsets(ds, origin: np.ndarray, normal: np.ndarray, frames: int) -> np.ndarray:
    """Each frame's position along the normal (mm), from either form of GridFrameOffsetVector."""
    offsets = ds.get("GridFrameOffsetVector")
    if frames == 1 and not offsets:
        return np.array([origin @ normal])
    if offsets is None or len(offsets) != frames:
        raise DoseSegError(f"{ds.filename}: GridFrameOffsetVector has {len(offsets or [])} values for {frames} frames")
    offsets = np.asarray([float(v) for v in offsets])
    if offsets[0] == 0:  # relative form: offsets from ImagePositionPatient along the normal
        return origin @ normal + offsets
    # absolute form (only defined for axial grids): the frames' z coordinates
    if not np.allclose(np.abs(normal), (0, 0, 1), atol=1e-6) or not np.isclose(offsets[0], origin[2], atol=1e-3):
        raise DoseSegError(f"{ds.filename}: GridFrameOffsetVector starts at {offsets[0]:g}, neither 0 (relative) "
                           "nor the first frame's z (absolute)")
    return offsets * normal[2]


def read_rtdose(path) -> RtDose:
    """Read an RTDOSE file into a Volume of dose values (frames sorted along the normal)."""
    import pydicom

    ds = pydicom.dcmread(path, force=True)
    ds.filename = str(path)
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "PixelData"):
        if keyword not in ds:
            raise DoseSegError(f"{path}: RTDOSE without {keyword}; not a dose grid (a point dose?)")
    row, col, normal = check_orientation(ds)
    origin = vector_of(ds, "ImagePositionPatient", 3)
    pixel = vector_of(ds, "PixelSpacing", 2)
    if np.any(pixel <= 0):
        raise DoseSegError(f"{path}: PixelSpacing {pixel.tolist()} must be positive")
    try:
        check_pixels(ds, path)  # before decoding: compressed frames may declare any size
        pixels = ds.pixel_array
    except Exception as exc:  # compressed or damaged pixel data
        raise DoseSegError(f"{path}: cannot decode the dose pixel data ({exc})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 1 or pixels.size != frames * int(ds.Rows) * int(ds.Columns):
        raise DoseSegError(f"{path}: {pixels.size} dose values, but NumberOfFrames x Rows x Columns is "
                           f"{frames} x {ds.Rows} x {ds.Columns} (a damaged file?)")
    pixels = pixels.reshape(frames, int(ds.Rows), int(ds.Columns))
    positions = _frame_offsets(ds, origin, normal, frames)
    order = np.argsort(positions)
    positions = positions[order]
    step = uniform_positions(positions, f"{path}: RTDOSE frames") or float(ds.get("SliceThickness") or 1.0)
    scaling = float(ds.get("DoseGridScaling", 1.0) or 1.0)
    dose = (pixels[order].transpose(2, 1, 0) * scaling).astype(np.float32)
    first = origin + (positions[0] - origin @ normal) * normal
    spacing = (float(pixel[1]), float(pixel[0]), step)
    volume = Volume(dose, spacing, tuple(first), np.column_stack([row, col, normal]))
    units = str(ds.get("DoseUnits", "")).upper()
    summation = str(ds.get("DoseSummationType", "")).upper()
    return RtDose(volume, units, summation, scaling, str(ds.get("FrameOfReferenceUID", "")))


def reference_dose(headers: list, frame_of_reference: str, folder) -> RtDose | None:
    """The patient's reference dose: the one RTDOSE, or the one plan sum (``PLAN_SUMS``) among several; in Gy."""
    if not headers:
        return None
    if len(headers) > 1:
        plans = [h for h in headers if str(h.get("DoseSummationType", "")).upper() in PLAN_SUMS]
        if len(plans) != 1:
            listing = ", ".join(f"{h.filename} ({h.get('DoseSummationType', '?')})" for h in headers)
            raise DoseSegError(f"{folder}: {len(headers)} RTDOSE files and not exactly one PLAN sum "
                               f"(PLAN or PLAN_OVERVIEW: {listing}); "
                               "keep the plan dose only")
        headers = plans
    return read_dose_gy(headers[0].filename, frame_of_reference)


def read_dose_gy(path, frame_of_reference: str = "") -> RtDose:
    """An RTDOSE that must be absolute (GY), non-negative and, when given, in ``frame_of_reference``."""
    dose = read_rtdose(path)
    if dose.units != "GY":
        raise DoseSegError(f"{path}: DoseUnits is {dose.units or 'missing'}; only absolute dose in GY is accepted")
    if dose.frame_of_reference and frame_of_reference and dose.frame_of_reference != frame_of_reference:
        raise DoseSegError(f"{path}: RTDOSE in Frame of Reference {dose.frame_of_reference}, the CT in "
                           f"{frame_of_reference}; use the dose computed on this CT")
    if dose.volume.array.min() < 0:
        raise DoseSegError(f"{path}: negative dose values")
    log.info("%s: RTDOSE, DoseSummationType %s, DoseGridScaling %g", path, dose.summation or "?", dose.scaling)
    return dose
