"""RTDOSE and RTSTRUCT out, in the CT's study and Frame of Reference, marked as research output.

Every object gets new Series and SOP Instance UIDs, copies the patient and study of the CT
(Type 2 attributes the CT lacks are written empty, nothing else is invented), references the
CT series, says in its SeriesDescription that it is DoseSeg research output, and an RTSTRUCT
carries ApprovalStatus UNAPPROVED (the RT Dose IOD has no Approval module: its
DoseComment says it). The objects follow their IODs (0 dciodvfy errors on a CT carrying its
Type 2 attributes). With a ``Deidentifier`` (``deid``), each object is de-identified per
PS3.15's Basic Application Level Confidentiality Profile before it is saved.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from DoseSegLib.core.colors import structure_color
from DoseSegLib.core.names import printable_name, shown_name
from DoseSegLib.core.version import __version__
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.contours import mask_polygons
from DoseSegLib.io.dicom.deid import Deidentifier
from DoseSegLib.io.dicom.series import SeriesGeometry

RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_REFERENCE = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (the usual RTReferencedStudy class)
RESEARCH = "DoseSeg research, not clinical"
LO_LIMIT = 64
log = logging.getLogger(__name__)
# Patient and General Study: (keyword, Type 2) copied from the CT; a Type 2 the CT lacks is written empty
_COPIED = (("PatientName", True), ("PatientID", True), ("PatientBirthDate", True), ("PatientSex", True),
           ("StudyInstanceUID", False), ("StudyDate", True), ("StudyTime", True), ("StudyID", True),
           ("ReferringPhysicianName", True), ("AccessionNumber", True), ("StudyDescription", False))


def decimal(value: float) -> str:
    """A DS string for ``value``: 6 significant digits, at most 13 characters (DS allows 16)."""
    return f"{value:.6g}"


def short_text(text: str, limit: int = LO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters at a word boundary (an LO value), never mid-word."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    cut = head.rsplit(" ", 1)[0].rstrip(" ,;:-") if " " in head else ""
    return cut or text[:limit]


def new_object(sop_class: str, modality: str, ct: SeriesGeometry, description: str):
    """A dataset with file meta, patient and study of the CT, RT Series and equipment, new UIDs."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

    source = ct.slices[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = source.get("SpecificCharacterSet", "ISO_IR 100") or "ISO_IR 100"
    for keyword, type2 in _COPIED:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
        elif type2:
            setattr(ds, keyword, "")
    now = datetime.datetime.now()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9001
    ds.SeriesDescription = short_text(f"{RESEARCH}: {description}")
    ds.FrameOfReferenceUID = ct.frame_of_reference  # RT Dose and RT Structure Set both hold the module
    ds.PositionReferenceIndicator = ""
    ds.OperatorsName = ""
    ds.Manufacturer = "DoseSeg"
    ds.ManufacturerModelName = "DoseSeg research software"
    ds.SoftwareVersions = __version__
    return ds


def save(ds, path: Path, deid: Deidentifier | None = None) -> Path:
    """Write ``ds`` as a DICOM file (de-identified first when ``deid`` is given)."""
    if deid is not None:
        deid.apply(ds)
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom 2.x (Slicer's Python): same result under the older keyword
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def _plan_reference(plan) -> list:
    """ReferencedRTPlanSequence naming ``plan`` (a pydicom header of an RTPLAN)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = plan.SOPClassUID
    item.ReferencedSOPInstanceUID = plan.SOPInstanceUID
    return [item]


def write_rtdose(path: Path, dose: Volume, ct: SeriesGeometry, description: str = "predicted dose",
                 deid: Deidentifier | None = None, plan=None) -> Path:
    """Write a dose in Gy (any grid whose k axis is +-the slice normal) as an RTDOSE, uint16 + DoseGridScaling.

    16 bits give a step of the maximum / 65535 (1 mGy at 70 Gy, far below any clinical meaning)
    and let every validator read the pixels (dciodvfy stops on 32-bit dose). With ``plan``
    (the RTPLAN read with the CT) the dose references it, DoseSummationType PLAN; without one it
    is PLAN_OVERVIEW, the plan-level summation that references no RTPLAN.
    """
    row, col, k_axis = dose.direction.T
    normal = np.cross(row, col)
    if np.allclose(k_axis, -normal, atol=1e-6):  # frames must run along the normal: store them reversed
        last = dose.index_to_lps @ np.array([0.0, 0.0, dose.shape[2] - 1, 1.0])
        dose = Volume(dose.array[:, :, ::-1], dose.spacing, tuple(last[:3]), np.column_stack([row, col, normal]))
    elif not np.allclose(k_axis, normal, atol=1e-6):
        raise ValueError("the dose grid's k axis must be the slice normal (row x column)")
    values = np.clip(dose.array.astype(np.float64), 0, None)
    top = float(values.max())
    scaling = float(decimal(top / 65000 if top > 0 else 1e-6))  # rounded up to 6 digits: stays below 65535
    pixels = np.round(values / scaling).astype(np.uint16)
    ni, nj, nk = dose.shape
    ds = new_object(RT_DOSE, "RTDOSE", ct, description)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ImagePositionPatient = [decimal(v) for v in dose.origin]
    ds.ImageOrientationPatient = [decimal(v) for v in (*row, *col)]
    ds.PixelSpacing = [decimal(dose.spacing[1]), decimal(dose.spacing[0])]
    ds.SliceThickness = decimal(dose.spacing[2])
    ds.GridFrameOffsetVector = [decimal(k * dose.spacing[2]) for k in range(nk)]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames = nk
    ds.Rows, ds.Columns = nj, ni
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType = "GY", "PHYSICAL"
    if plan is not None:
        ds.DoseSummationType = "PLAN"
        ds.ReferencedRTPlanSequence = _plan_reference(plan)
    else:
        ds.DoseSummationType = "PLAN_OVERVIEW"
    ds.DoseComment = "DoseSeg prediction, research only; no plan delivers it"
    ds.DoseGridScaling = decimal(scaling)
    ds.PixelData = np.ascontiguousarray(pixels.transpose(2, 1, 0)).tobytes()
    return save(ds, Path(path), deid)


def _referenced_frame(ct: SeriesGeometry):
    from pydicom.dataset import Dataset

    images = []
    for header in ct.slices:
        image = Dataset()
        image.ReferencedSOPClassUID = header.SOPClassUID
        image.ReferencedSOPInstanceUID = header.SOPInstanceUID
        images.append(image)
    series = Dataset()
    series.SeriesInstanceUID = ct.series_uid
    series.ContourImageSequence = images
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_REFERENCE
    study.ReferencedSOPInstanceUID = ct.slices[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = ct.frame_of_reference
    frame.RTReferencedStudySequence = [study]
    return frame, images


def mask_contours(mask: Volume, slices: Iterable[int] | None = None) -> list[np.ndarray]:
    """Closed planar contours ``(n, 3)`` in LPS mm of a mask's k slices (all non-empty ones by default)."""
    array = np.asarray(mask.array, dtype=bool)
    chosen = np.flatnonzero(array.any(axis=(0, 1))) if slices is None else slices
    contours = []
    for k in chosen:
        for polygon in mask_polygons(array[:, :, k]):
            ijk = np.column_stack([polygon, np.full(len(polygon), float(k)), np.ones(len(polygon))])
            contours.append((ijk @ mask.index_to_lps.T)[:, :3])
    return contours


def _contour_items(contours: list[np.ndarray], ct: SeriesGeometry, images: list) -> list:
    """ContourSequence items, each referencing the CT slice of its plane when it lies on one."""
    from pydicom.dataset import Dataset

    to_index = np.linalg.inv(ct.grid.index_to_lps)
    items = []
    for lps in contours:
        item = Dataset()
        k = float((to_index[2, :3] @ lps[0]) + to_index[2, 3])
        if abs(k - round(k)) < 0.01 and 0 <= round(k) < len(images):
            item.ContourImageSequence = [images[round(k)]]
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(lps)
        item.ContourData = [f"{v:.3f}" for v in lps.ravel()]
        items.append(item)
    return items


class Generation(str, Enum):
    """ROIGenerationAlgorithm: who drew an ROI."""

    AUTOMATIC = "AUTOMATIC"
    SEMIAUTOMATIC = "SEMIAUTOMATIC"
    MANUAL = "MANUAL"


@dataclass(frozen=True)
class RoiStyle:
    """How one ROI is declared.

    Attributes:
        kind: RTROIInterpretedType ('' for one from the name: ``kind_from_name``).
        generation: ROIGenerationAlgorithm.
        algorithm: ROIGenerationDescription (the model that drew it), '' for none.
        color: ROIDisplayColor (0-255 RGB), None for DoseSeg's colour of the name.
    """

    kind: str = ""
    generation: Generation = Generation.AUTOMATIC
    algorithm: str = ""
    color: tuple[int, int, int] | None = None


_KIND_PREFIXES = (("PTV", "PTV"), ("CTV", "CTV"), ("GTV", "GTV"), ("BODY", "EXTERNAL"), ("EXTERNAL", "EXTERNAL"),
                  ("SKIN", "EXTERNAL"), ("OUTER", "EXTERNAL"))


def kind_from_name(name: str) -> str:
    """RTROIInterpretedType a name implies: PTV, CTV, GTV, EXTERNAL (Body, External, Skin) or ORGAN."""
    upper = name.upper()
    return next((kind for prefix, kind in _KIND_PREFIXES if upper.startswith(prefix)), "ORGAN")


def roi_names(names: Iterable[str]) -> dict[str, str]:
    """Each structure's ROIName (LO): no control character (:func:`names.printable_name`, as every reader gives
    names), no backslash, which DICOM reads as the end of a value ('Lens\\L' would be two names), at most 64
    characters; a name cut to the same text as another ends in ``~2``, ``~3``... Each change is a warning."""
    written: dict[str, str] = {}
    for name in names:
        value = base = printable_name(name).replace("\\", "/")[:LO_LIMIT]
        number = 1
        while value in written.values():
            number += 1
            value = f"{base[:LO_LIMIT - len(str(number)) - 1]}~{number}"
        if value != name:
            log.warning("ROI '%s' written as ROIName '%s' (DICOM allows no control character or backslash in it, "
                        "and at most %d characters)", shown_name(name), value, LO_LIMIT)
        written[name] = value
    return written


def _roi_items(number: int, name: str, written: str, style: RoiStyle, ct: SeriesGeometry):
    """The StructureSetROISequence and RTROIObservationsSequence items of one ROI (``written``: its ROIName)."""
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, ct.frame_of_reference, written
    roi.ROIGenerationAlgorithm = style.generation.value
    if style.algorithm:
        roi.ROIGenerationDescription = short_text(style.algorithm)
    observation = Dataset()
    observation.ObservationNumber = observation.ReferencedROINumber = number
    observation.RTROIInterpretedType, observation.ROIInterpreter = style.kind or kind_from_name(name), ""
    return roi, observation


def write_rtstruct(path: Path, structures: dict[str, list[np.ndarray]], ct: SeriesGeometry,
                   styles: dict[str, RoiStyle] | None = None, description: str = "auto-segmented structures",
                   deid: Deidentifier | None = None) -> Path:
    """Write structures given as planar contours (``mask_contours``) as an RTSTRUCT on the CT's frame.

    Args:
        styles: how each ROI is declared (default: AUTOMATIC, the type from its name).
    """
    from pydicom.dataset import Dataset

    ds = new_object(RT_STRUCT, "RTSTRUCT", ct, description)
    ds.FrameOfReferenceUID = ct.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "DoseSeg"
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    frame, images = _referenced_frame(ct)
    ds.ReferencedFrameOfReferenceSequence = [frame]
    rois, contours, observations = [], [], []
    written = roi_names(structures)
    for number, (name, polygons) in enumerate(structures.items(), start=1):
        style = (styles or {}).get(name, RoiStyle())
        roi, observation = _roi_items(number, name, written[name], style, ct)
        rois.append(roi)
        observations.append(observation)
        contour = Dataset()
        contour.ROIDisplayColor = list(style.color or (round(255 * c) for c in structure_color(name)))
        contour.ReferencedROINumber = number
        contour.ContourSequence = _contour_items(polygons, ct, images)
        contours.append(contour)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    ds.ApprovalStatus = "UNAPPROVED"
    return save(ds, Path(path), deid)
