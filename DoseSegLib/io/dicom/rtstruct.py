"""RTSTRUCT in: ROIs (name, interpreted type, Frame of Reference, planar contours) and their masks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import name_from_file
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.fine import fine_mask
from DoseSegLib.io.dicom.rasterise import rasterise

log = logging.getLogger(__name__)


@dataclass
class Roi:
    """One ROI of a structure set; contours are ``(n, 3)`` LPS mm arrays (CLOSED_PLANAR only)."""

    number: int
    name: str
    kind: str  # RTROIInterpretedType: EXTERNAL, PTV, ORGAN, ...
    frame_of_reference: str
    contours: list[np.ndarray] = field(default_factory=list)
    points: int = 0  # POINT / MARKER contours, not rasterised
    generation: str = ""  # ROIGenerationAlgorithm as written (AUTOMATIC, SEMIAUTOMATIC, MANUAL or '')
    color: tuple[int, int, int] | None = None  # ROIDisplayColor


def referenced_series(ds) -> set[str]:
    """The SeriesInstanceUIDs a structure set says it was drawn on."""
    found = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                found.add(str(series.get("SeriesInstanceUID", "")))
    return found


def _contour_points(item, path: str, name: str) -> np.ndarray:
    """ContourData as ``(n, 3)``, parsed straight from the file's text (pydicom's DS objects are slow)."""
    element = item.get_item(0x30060050) if 0x30060050 in item else None
    value = None if element is None else element.value
    try:
        if isinstance(value, bytes):
            numbers = np.array(value.decode("ascii", "replace").replace("\\", " ").split(), dtype=float)
        else:
            numbers = np.atleast_1d(np.asarray([] if value is None else value, dtype=float))
    except (TypeError, ValueError):
        numbers = np.zeros(0)
    if numbers.size == 0 or numbers.size % 3:
        raise DoseSegError(f"{path}: ROI '{name}' has a contour whose ContourData is not x, y, z triples")
    points = numbers.reshape(-1, 3)
    finite = np.all(np.isfinite(points), axis=1)
    if not finite.all():
        log.warning("%s: ROI '%s': %d contour point(s) with NaN or infinite coordinates left out",
                    path, name, int((~finite).sum()))
    return points[finite]


def _number(item, keyword: str, path: str) -> int:
    """A whole-number attribute (ROINumber and its references); a DoseSegError naming the file otherwise."""
    element = item.get_item(keyword) if keyword in item else None
    value = element.value if element is not None else None
    shown = value.decode(errors="replace").strip() if isinstance(value, bytes) else value
    try:
        return int(str(shown).strip())
    except (TypeError, ValueError):
        raise DoseSegError(f"{path}: {keyword} {shown!r} is not a whole number") from None


def _text(value: object) -> str:
    """A text attribute as written: a name holding a backslash (DICOM's value delimiter) is read by pydicom as
    several values, joined back here."""
    from pydicom.multival import MultiValue

    return "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)


def read_rois(ds) -> list[Roi]:
    """Every ROI of a structure set (read with pydicom), in StructureSetROISequence order."""
    path = str(getattr(ds, "filename", "RTSTRUCT"))
    kinds = {_number(o, "ReferencedROINumber", path):
             str(o.get("RTROIInterpretedType", "") or "").upper()
             for o in ds.get("RTROIObservationsSequence", []) if "ReferencedROINumber" in o}
    rois = {}
    for item in ds.get("StructureSetROISequence", []):
        number = _number(item, "ROINumber", path)
        name = name_from_file(path, _text(item.get("ROIName", f"ROI {number}")).strip(" "), "ROI name")
        rois[number] = Roi(number, name, kinds.get(number, ""),
                           str(item.get("ReferencedFrameOfReferenceUID", "")),
                           generation=str(item.get("ROIGenerationAlgorithm", "") or "").upper())
    for item in ds.get("ROIContourSequence", []):
        roi = rois.get(_number(item, "ReferencedROINumber", path))
        if roi is None:
            raise DoseSegError(f"{path}: contours for ROI number {item.ReferencedROINumber}, which is not declared")
        color = item.get("ROIDisplayColor")
        if color is not None and len(color) == 3:
            roi.color = (int(color[0]), int(color[1]), int(color[2]))
        for contour in item.get("ContourSequence", []):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper() == "CLOSED_PLANAR":
                roi.contours.append(_contour_points(contour, path, roi.name))
            else:
                roi.points += 1
    return list(rois.values())


def roi_mask(roi: Roi, grid: Volume, slab_mm: float, path: str) -> np.ndarray:
    """The ROI rasterised onto ``grid`` (slab convention, even-odd rule), with the file named on error."""
    try:
        return rasterise(roi.contours, grid, slab_mm)
    except DoseSegError as exc:
        raise DoseSegError(f"{path}: ROI '{roi.name}': {exc}") from exc


def structure_masks(ds, grid: Volume, frame_of_reference: str, mapper, rois: list[Roi] | None = None,
                    fine: dict[str, Volume] | None = None) -> tuple[dict[str, Volume], Volume | None]:
    """Canonically named masks on ``grid`` and the body (the EXTERNAL ROI), from a structure set.

    ``fine``, when given, receives each structure on a sub-voxel grid (``fine.fine_mask``) for
    the DVH, where its box is small enough.

    Choices: ROIs without contours (empty, or points only) and ROIs that cover no voxel centre
    are skipped with a warning; two ROIs mapping to one name, two EXTERNAL ROIs and an ROI in
    another Frame of Reference are refused.
    """
    path = str(getattr(ds, "filename", "RTSTRUCT"))
    masks: dict[str, Volume] = {}
    given: dict[str, str] = {}  # canonical name -> ROI name
    bodies: list[tuple[str, Volume]] = []
    for roi in rois if rois is not None else read_rois(ds):
        if roi.frame_of_reference and frame_of_reference and roi.frame_of_reference != frame_of_reference:
            raise DoseSegError(f"{path}: ROI '{roi.name}' is in Frame of Reference {roi.frame_of_reference}, the CT "
                               f"in {frame_of_reference}; use the structure set drawn on this CT")
        if not roi.contours:
            log.warning("%s: ROI '%s' has no closed contour; skipped", path, roi.name)
            continue
        mask = roi_mask(roi, grid, grid.spacing[2], path)
        if not mask.any():
            log.warning("%s: ROI '%s' covers no CT voxel centre (outside the CT or smaller than a voxel); skipped",
                        path, roi.name)
            continue
        if roi.kind == "EXTERNAL":
            bodies.append((roi.name, grid.with_array(mask)))
            continue
        _, name = mapper.read(path, roi.name, given)
        masks[name] = grid.with_array(mask)
        if fine is not None:
            sub_voxel = fine_mask(roi.contours, grid, grid.spacing[2])
            if sub_voxel is not None:
                fine[name] = sub_voxel
    if len(bodies) > 1:
        raise DoseSegError(f"{path}: {len(bodies)} EXTERNAL ROIs ({', '.join(n for n, _ in bodies)}); keep one body")
    return masks, bodies[0][1] if bodies else None


def structure_set_frame(ds) -> str:
    """The Frame of Reference a structure set's ROIs are drawn in ('' when it does not say)."""
    frames = {str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.get("StructureSetROISequence", [])}
    frames |= {str(f.get("FrameOfReferenceUID", "")) for f in ds.get("ReferencedFrameOfReferenceSequence", [])}
    frames.discard("")
    return frames.pop() if len(frames) == 1 else ""
