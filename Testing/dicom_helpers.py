"""Write a Case as a DICOM patient folder (CT series, RTSTRUCT, RTDOSE, RTPLAN) for the DICOM tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from DoseSegLib.core.alignment import align_structure
from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.export import (
    Generation,
    RoiStyle,
    decimal,
    mask_contours,
    new_object,
    save,
    write_rtdose,
    write_rtstruct,
)
from DoseSegLib.io.dicom.reader import ct_geometry
from DoseSegLib.io.dicom.series import SeriesGeometry

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"

DCIODVFY = shutil.which("dciodvfy")  # dicom3tools' validator (apt-get install dicom3tools), when installed


def write_ct_series(folder: Path, ct: Volume, patient_id: str = "DS-TEST", frame: str | None = None,
                    study: str | None = None, patient_name: str = "Test^Patient") -> list[Path]:
    """One CT file per k slice (axial, identity in-plane axes as the CT's), stored HU + 1024 with an intercept."""
    folder.mkdir(parents=True, exist_ok=True)
    frame, study, series = frame or generate_uid(), study or generate_uid(), generate_uid()
    row, col = ct.direction[:, 0], ct.direction[:, 1]
    paths = []
    for k in range(ct.shape[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName, ds.PatientID, ds.Modality = patient_name, patient_id, "CT"
        ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "1"
        ds.StudyDescription, ds.ReferringPhysicianName, ds.AccessionNumber = "H&N plan Doe Jane", "Ref^Doc", "A123"
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, k + 1, 1
        ds.PatientPosition, ds.Laterality, ds.PositionReferenceIndicator = "HFS", "", ""
        ds.Manufacturer, ds.KVP = "TestScanner", "120"
        position = ct.index_to_lps @ np.array([0.0, 0.0, k, 1.0])
        ds.ImagePositionPatient = [decimal(v) for v in position[:3]]
        ds.ImageOrientationPatient = [decimal(v) for v in (*row, *col)]
        ds.PixelSpacing = [decimal(ct.spacing[1]), decimal(ct.spacing[0])]
        ds.SliceThickness = decimal(ct.spacing[2])
        ds.Rows, ds.Columns = ct.shape[1], ct.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        stored = np.clip(ct.array[:, :, k].astype(np.int32) + 1024, 0, 65535).astype(np.uint16)
        ds.PixelData = np.ascontiguousarray(stored.T).tobytes()
        path = folder / f"CT{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_rtplan(path: Path, ct: SeriesGeometry, prescriptions: dict[int, float], structure_set: Path,
                 fractions: int = 35) -> Path:
    """An RTPLAN holding only prescriptions (ROI number of ``structure_set`` -> TargetPrescriptionDose, Gy)."""
    ds = new_object(RT_PLAN, "RTPLAN", ct, "test plan")
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = ct.frame_of_reference, ""
    ds.RTPlanLabel, ds.RTPlanGeometry, ds.RTPlanDate, ds.RTPlanTime = "TEST", "PATIENT", "", ""
    structures = pydicom.dcmread(structure_set, stop_before_pixels=True)
    reference = Dataset()
    reference.ReferencedSOPClassUID = structures.SOPClassUID
    reference.ReferencedSOPInstanceUID = structures.SOPInstanceUID
    ds.ReferencedStructureSetSequence = [reference]
    references = []
    for number, (roi, dose) in enumerate(prescriptions.items(), start=1):
        item = Dataset()
        item.DoseReferenceNumber, item.DoseReferenceStructureType = number, "VOLUME"
        item.ReferencedROINumber, item.DoseReferenceType = roi, "TARGET"
        item.TargetPrescriptionDose = decimal(dose)
        references.append(item)
    ds.DoseReferenceSequence = references
    group = Dataset()
    group.FractionGroupNumber, group.NumberOfFractionsPlanned, group.NumberOfBeams = 1, fractions, 0
    group.NumberOfBrachyApplicationSetups = 0
    ds.FractionGroupSequence = [group]
    return save(ds, path)


def write_dicom_patient(folder: Path, case: Case, plan: bool = True, patient_id: str = "DS-TEST",
                        patient_name: str = "Test^Patient") -> Path:
    """``case`` as a DICOM folder: CT series, RTSTRUCT (structures on the CT grid + the possible-dose
    mask as EXTERNAL), RTDOSE (the dose on its own grid) and an RTPLAN with the targets' prescriptions."""
    write_ct_series(folder, case.ct, patient_id, patient_name=patient_name)
    ct = ct_geometry(scan_folder(folder))
    masks = {name: align_structure(name, mask, ct.grid) for name, mask in case.structures.items()}
    if case.possible_dose_mask is not None:
        masks["External"] = align_structure("External", case.possible_dose_mask, ct.grid)
    write_rtstruct(folder / "rtstruct.dcm", {name: mask_contours(mask) for name, mask in masks.items()}, ct,
                   {name: RoiStyle(generation=Generation.MANUAL) for name in masks})
    if case.dose is not None:
        write_rtdose(folder / "rtdose.dcm", case.dose, ct, "reference dose")
    targets = {number: case.targets[name] for number, name in enumerate(masks, start=1) if name in case.targets}
    if plan and targets:
        write_rtplan(folder / "rtplan.dcm", ct, targets, folder / "rtstruct.dcm")
    return folder


def dose_scaling(path: Path) -> float:
    """DoseGridScaling of an RTDOSE file."""
    return float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)


def slab_planes(mask: Volume, plane_mm: float) -> list[np.ndarray]:
    """The planar contours a slab-rasterised mask came from: one plane per ``plane_mm`` run of slices."""
    group = round(plane_mm / mask.spacing[2])
    changes = [k for k in range(mask.shape[2] - 1) if not np.array_equal(mask.array[:, :, k], mask.array[:, :, k + 1])]
    assert changes and all((k - changes[0]) % group == 0 for k in changes), "not slabs of plane_mm"
    first = (changes[0] + 0.5) % group - group / 2  # slice coordinate of the first plane's centre (may be < 0)
    contours = []
    for centre in np.arange(first, mask.shape[2] - 1 + group / 2, group):
        k = int(np.clip(np.ceil(centre), 0, mask.shape[2] - 1))
        shift = mask.direction[:, 2] * mask.spacing[2] * (centre - k)
        contours += [c + shift for c in mask_contours(mask, [k])]
    return contours


def write_dicom_from_slab_masks(folder: Path, case: Case, plane_mm: float, body_kind: str = "EXTERNAL") -> Path:
    """``case`` as CT series + RTSTRUCT + RTDOSE, contours recovered from masks rasterised on finer grids.

    For structures given as masks made from planar contours on sub-voxel grids
    (slicerrt-eclipse-prostate): see ``slab_planes``. ROIs keep the names as read (BODY, Femoral_Head_Lt),
    MANUAL; the body is ``body_kind`` (EXTERNAL as Eclipse writes it; ORGAN to have DoseSeg read it as a
    structure with a DVH rather than as the possible-dose mask).
    """
    write_ct_series(folder, case.ct)
    ct = ct_geometry(scan_folder(folder))
    structures = {case.original_names.get(name, name): slab_planes(mask, plane_mm)
                  for name, mask in case.structures.items()}
    styles = {name: RoiStyle("" if name.upper() != "BODY" else body_kind, Generation.MANUAL) for name in structures}
    write_rtstruct(folder / "rtstruct.dcm", structures, ct, styles, "Eclipse contours")
    write_rtdose(folder / "rtdose.dcm", case.dose, ct, "reference dose")
    return folder


def round_contours(path: Path, decimals: int, xy_decimals: int | None = None) -> Path:
    """Rewrite an RTSTRUCT's ContourData with z (and x, y when given) rounded as TPSs write them."""
    ds = pydicom.dcmread(path)
    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            points = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            points[:, 2] = np.round(points[:, 2], decimals)
            if xy_decimals is not None:
                points[:, :2] = np.round(points[:, :2], xy_decimals)
            contour.ContourData = [f"{v:.{max(decimals, xy_decimals or 0)}f}" for v in points.ravel()]
    ds.save_as(path, enforce_file_format=True)
    return path


def awkward_case(case: Case) -> Case:
    """``case`` moved to a grid whose slice positions are not round numbers (z written to 3 or 2 decimals
    is then off its slice), with a lens of 2 slices and a chiasm of 3 slices added."""
    spacing, origin = (1.171875 * 3, 1.171875 * 3, 2.4413), (-111.4141, -97.8234, -58.33337)

    def moved(volume: Volume) -> Volume:
        return Volume(volume.array, spacing, origin, volume.direction)

    grid = moved(case.ct)
    x, y, z = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    ci, cj, ck = (n // 2 for n in grid.shape)
    lens = ((x - ci - 9) / 1.6) ** 2 + ((y - cj + 14) / 1.3) ** 2 + ((z - ck - 10.5) / 1.0) ** 2 <= 1
    chiasm = ((x - ci) / 3.2) ** 2 + ((y - cj + 3) / 1.4) ** 2 + ((z - ck - 12) / 1.4) ** 2 <= 1
    structures = {name: moved(mask) for name, mask in case.structures.items()}
    structures |= {"Lens_L": grid.with_array(lens), "OpticChiasm": grid.with_array(chiasm)}
    return Case(case.name, grid, structures, moved(case.dose) if case.dose is not None else None,
                moved(case.possible_dose_mask) if case.possible_dose_mask is not None else None)


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for one file (it exits 0 even when it finds errors)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    assert any(line.startswith(("RTDose", "RTStructureSet", "Segmentation", "CTImage")) for line in lines), lines
    return [line for line in lines if line.startswith("Error")]
