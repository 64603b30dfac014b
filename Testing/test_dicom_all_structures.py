"""``export-dicom --all-structures`` keeps the clinician's work: names, types, colours, MANUAL generation,
the body; only DoseSeg's own ROIs are AUTOMATIC, with the model named. `run` -> export -> read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import write_ct_series
from model_helpers import fake_segmentation

from DoseSegLib.cli.main import main
from DoseSegLib.core.alignment import align_structure
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.export import Generation, RoiStyle, mask_contours, write_rtstruct
from DoseSegLib.io.dicom.reader import ct_geometry
from DoseSegLib.io.dicom.rtstruct import read_rois, roi_mask
from DoseSegLib.io.phantom import make_phantom

# the clinician's names (vendor spellings), types and colours
CLINICIAN = {"BRSTEM": ("Brainstem", "ORGAN", (200, 10, 10)), "Cord": ("SpinalCord", "AVOIDANCE", (0, 0, 255)),
             "Tumour_bed": ("PTV56", "CTV", (255, 128, 0)), "PTV_High": ("PTV70", "PTV", (255, 0, 0)),
             "Parotid_R": ("RightParotid", "ORGAN", (0, 200, 0)), "BODY": (None, "EXTERNAL", (0, 255, 0))}
AUTO = ("Esophagus", "Larynx", "LeftParotid", "Mandible")  # the OARs the clinician left to DoseSeg


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture
def exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A DICOM patient drawn by a clinician, run with a stand-in segmentation model, exported with all structures."""
    fake_segmentation(monkeypatch, tmp_path)
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    case = make_phantom(shape=(40, 40, 32))
    patient = tmp_path / "patient"
    write_ct_series(patient, case.ct)
    ct = ct_geometry(scan_folder(patient))
    masks = {name: align_structure(name, case.structures[canonical] if canonical else case.possible_dose_mask,
                                   ct.grid) for name, (canonical, _, _) in CLINICIAN.items()}
    styles = {name: RoiStyle(kind, Generation.MANUAL, color=color) for name, (_, kind, color) in CLINICIAN.items()}
    write_rtstruct(patient / "rtstruct.dcm", {n: mask_contours(m) for n, m in masks.items()}, ct, styles, "plan")
    out = tmp_path / "run"
    assert main(["run", str(patient), "-o", str(out), "--device", "cpu", "--no-radiomics",
                 "--prescription", "PTV_High=70", "--prescription", "Tumour_bed=56"]) == 0
    dicom = tmp_path / "dicom"
    assert main(["export-dicom", str(out), "--ct", str(patient), "-o", str(dicom), "--all-structures"]) == 0
    return patient, dicom


def test_all_structures_keep_the_clinicians_work(exported: tuple[Path, Path]) -> None:
    patient, dicom = exported
    ds = pydicom.dcmread(dicom / "rtstruct.dcm")
    rois = {roi.name: roi for roi in read_rois(ds)}
    assert set(rois) == set(CLINICIAN) | set(AUTO)  # original names, body kept
    descriptions = {r.ROIName: r.get("ROIGenerationDescription", "") for r in ds.StructureSetROISequence}
    for name, (_, kind, color) in CLINICIAN.items():
        assert (rois[name].kind, rois[name].generation, rois[name].color) == (kind, "MANUAL", color), name
        assert descriptions[name] == "", name
    for name in AUTO:
        assert rois[name].generation == "AUTOMATIC" and "fake-seg 9" in descriptions[name], name
    grid = ct_geometry(scan_folder(patient)).grid
    originals = {roi.name: roi for roi in read_rois(pydicom.dcmread(patient / "rtstruct.dcm"))}
    for name, original in originals.items():
        back = roi_mask(rois[name], grid, grid.spacing[2], "back")
        assert dice(back, roi_mask(original, grid, grid.spacing[2], "original")) >= 0.98, name
    truth = make_phantom(shape=(40, 40, 32)).structures
    for name in AUTO:
        assert np.array_equal(roi_mask(rois[name], grid, grid.spacing[2], "back"), truth[name].array), name
    for name in CLINICIAN:  # copied as drawn, not re-contoured from the mask
        assert len(rois[name].contours) == len(originals[name].contours), name
        for a, b in zip(rois[name].contours, originals[name].contours, strict=True):
            assert np.allclose(a, b, atol=5e-4), name
    # without --all-structures: DoseSeg's ROIs only
    assert main(["export-dicom", str(dicom.parent / "run"), "--ct", str(patient), "-o", str(dicom.parent / "o")]) == 0
    auto = read_rois(pydicom.dcmread(dicom.parent / "o" / "rtstruct.dcm"))
    assert {r.name for r in auto} == set(AUTO) and {r.generation for r in auto} == {"AUTOMATIC"}

