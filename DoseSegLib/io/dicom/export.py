"""RTDOSE and RTSTRUCT out, in the CT's study and Frame of Reference, marked as research output.

Every object gets new Series and SOP Instance UIDs, copies the patient and study of the CT
(nothing else is invented), references the CT series, says in its SeriesDescription that it
is DoseSeg research output and carries ApprovalStatus UNAPPROVED. With ``anonymise``, the
patient's name and ID become a stable pseudonym and birth date, sex, referring physician,
accession number and study ID are left out (the study and frame UIDs stay, to link back to the CT).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from DoseSegLib.core.colors import structure_color
from DoseSegLib.core.version import __version__
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.contours import mask_polygons
from DoseSegLib.io.dicom.series import SeriesGeometry

RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_REFERENCE = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (the usual RTReferencedStudy class)
RESEARCH = "DoseSeg research output - not a clinical plan"
_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
           "StudyTime", "StudyID", "ReferringPhysicianName", "AccessionNumber", "StudyDescription")


_IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
             "AccessionNumber", "StudyID")


def pseudonym(patient_id: str) -> str:
    """A stable stand-in for a PatientID (a hash: hides the identity from readers, not a de-identification)."""
    return "DS-" + hashlib.sha256(f"doseseg:{patient_id}".encode()).hexdigest()[:12].upper()


def decimal(value: float) -> str:
    """A DS string (at most 16 characters) for ``value``."""
    text = f"{value:.6g}"
    return text if len(text) <= 16 else f"{value:.8e}"[:16]


def new_object(sop_class: str, modality: str, ct: SeriesGeometry, description: str,
               anonymise: bool = False):
    """A dataset with file meta, patient and study of the CT, new UIDs and the research markers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    source = ct.slices[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    for keyword in _COPIED:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
    if anonymise:
        for keyword in _IDENTITY:
            if keyword in ds:
                delattr(ds, keyword)
        ds.PatientName = ds.PatientID = pseudonym(str(source.get("PatientID", "")))
        ds.PatientIdentityRemoved = "YES"
    now = datetime.datetime.now()
    ds.InstanceCreationDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9001
    ds.SeriesDescription = f"{RESEARCH}: {description}"[:64]
    ds.FrameOfReferenceUID = ct.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "DoseSeg"
    ds.ManufacturerModelName = "DoseSeg research software"
    ds.SoftwareVersions = __version__
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _save(ds, path: Path) -> Path:
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom 2.x (Slicer's Python): same result under the older keyword
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def write_rtdose(path: Path, dose: Volume, ct: SeriesGeometry, description: str = "predicted dose",
                 anonymise: bool = False) -> Path:
    """Write a dose in Gy (any grid whose k axis is +-the slice normal) as an RTDOSE, uint32 + DoseGridScaling."""
    row, col, k_axis = dose.direction.T
    normal = np.cross(row, col)
    if np.allclose(k_axis, -normal, atol=1e-6):  # frames must run along the normal: store them reversed
        last = dose.index_to_lps @ np.array([0.0, 0.0, dose.shape[2] - 1, 1.0])
        dose = Volume(dose.array[:, :, ::-1], dose.spacing, tuple(last[:3]), np.column_stack([row, col, normal]))
    elif not np.allclose(k_axis, normal, atol=1e-6):
        raise ValueError("the dose grid's k axis must be the slice normal (row x column)")
    values = np.clip(dose.array.astype(np.float64), 0, None)
    top = float(values.max())
    # a step of a millionth of the maximum: far below any clinical meaning, above float32's resolution
    scaling = float(decimal(top / 1_000_000 if top > 0 else 1e-6))
    pixels = np.round(values / scaling).astype(np.uint32)
    ni, nj, nk = dose.shape
    ds = new_object(RT_DOSE, "RTDOSE", ct, description, anonymise)
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
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseComment = "DoseSeg prediction; no plan delivers it"
    ds.DoseGridScaling = decimal(scaling)
    ds.PixelData = np.ascontiguousarray(pixels.transpose(2, 1, 0)).tobytes()
    return _save(ds, Path(path))


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


def write_rtstruct(path: Path, structures: dict[str, list[np.ndarray]], ct: SeriesGeometry,
                   kinds: dict[str, str] | None = None, description: str = "auto-segmented structures",
                   anonymise: bool = False) -> Path:
    """Write structures given as planar contours (``mask_contours``) as an RTSTRUCT on the CT's frame.

    Args:
        kinds: RTROIInterpretedType per name (default ORGAN; PTV for names starting with PTV).
    """
    from pydicom.dataset import Dataset

    ds = new_object(RT_STRUCT, "RTSTRUCT", ct, description, anonymise)
    ds.StructureSetLabel = "DoseSeg"
    ds.StructureSetDate, ds.StructureSetTime = ds.ContentDate, ds.ContentTime
    frame, images = _referenced_frame(ct)
    ds.ReferencedFrameOfReferenceSequence = [frame]
    rois, contours, observations = [], [], []
    for number, (name, polygons) in enumerate(structures.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, ct.frame_of_reference, name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        contour = Dataset()
        contour.ROIDisplayColor = [round(255 * c) for c in structure_color(name)]
        contour.ReferencedROINumber = number
        contour.ContourSequence = _contour_items(polygons, ct, images)
        contours.append(contour)
        observation = Dataset()
        observation.ObservationNumber = observation.ReferencedROINumber = number
        kind = (kinds or {}).get(name) or ("PTV" if name.upper().startswith("PTV") else "ORGAN")
        observation.RTROIInterpretedType, observation.ROIInterpreter = kind, ""
        observations.append(observation)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    return _save(ds, Path(path))
