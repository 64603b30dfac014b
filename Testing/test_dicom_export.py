"""DICOM-RT out: RTDOSE and RTSTRUCT in the CT's study and frame, `doseseg run` and `doseseg export-dicom`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_helpers import write_dicom_patient
from model_helpers import fake_segmentation

from DoseSegLib.cli.main import main
from DoseSegLib.core.alignment import resample
from DoseSegLib.core.case import Case
from DoseSegLib.core.names import NameMapper
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.reader import ct_geometry
from DoseSegLib.io.dicom.results import write_dicom_results
from DoseSegLib.io.dicom.rtstruct import structure_masks
from DoseSegLib.io.patient import read_volume, write_segmentation, write_volume
from DoseSegLib.io.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom() -> Case:
    return make_phantom()


@pytest.fixture(scope="module")
def dicom_ct(tmp_path_factory: pytest.TempPathFactory, phantom: Case) -> Path:
    """The phantom as DICOM, without its parotids and mandible (so a run auto-segments them)."""
    kept = {n: m for n, m in phantom.structures.items() if n not in ("LeftParotid", "RightParotid", "Mandible")}
    case = Case(phantom.name, phantom.ct, kept, phantom.dose, phantom.possible_dose_mask)
    return write_dicom_patient(tmp_path_factory.mktemp("dicom") / "phantom", case)


def check_research_object(path: Path, ct_folder: Path, modality: str) -> pydicom.Dataset:
    """Read back with pydicom: same patient, study and frame as the CT, new UIDs, marked research (an RTSTRUCT
    UNAPPROVED; the RT Dose IOD has no approval)."""
    ds = pydicom.dcmread(path)
    ct = pydicom.dcmread(ct_folder / "CT0000.dcm")
    assert ds.Modality == modality and ds.get("ApprovalStatus") == ("UNAPPROVED" if modality == "RTSTRUCT" else None)
    assert "research" in ds.SeriesDescription.lower()
    assert ds.StudyInstanceUID == ct.StudyInstanceUID and ds.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert ds.PatientID == ct.PatientID and ds.PatientName == ct.PatientName
    assert ds.SeriesInstanceUID != ct.SeriesInstanceUID and ds.SOPInstanceUID != ct.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    return ds


def check_dose(path: Path, ct_folder: Path, expected: np.ndarray) -> None:
    """The RTDOSE equals ``expected`` within its DoseGridScaling, on the CT grid, by pydicom and SimpleITK."""
    ds = check_research_object(path, ct_folder, "RTDOSE")
    assert ds.DoseUnits == "GY" and ds.DoseSummationType == ("PLAN" if (ct_folder / "rtplan.dcm").exists()
                                                             else "PLAN_OVERVIEW")
    step = float(ds.DoseGridScaling)
    grid = ct_geometry(scan_folder(ct_folder)).grid
    image = sitk.ReadImage(str(path))
    assert image.GetSize() == grid.shape
    assert np.allclose(image.GetOrigin(), grid.origin) and np.allclose(image.GetSpacing(), grid.spacing)
    values = sitk.GetArrayFromImage(image).transpose(2, 1, 0) * step  # SimpleITK keeps the stored integers
    assert np.abs(values - expected).max() <= step
    assert np.abs(ds.pixel_array.transpose(2, 1, 0) * step - expected).max() <= step


def on_ct_grid(dose_file: Path, ct_folder: Path) -> np.ndarray:
    """A dose NRRD written by ``run`` (cropped to its non-zero box) put back onto the whole CT grid."""
    return resample(read_volume(dose_file), ct_geometry(scan_folder(ct_folder)).grid).array


def check_structures(path: Path, ct_folder: Path, expected: dict[str, np.ndarray]) -> None:
    """The RTSTRUCT references the CT series and rasterises back to exactly the masks."""
    ds = check_research_object(path, ct_folder, "RTSTRUCT")
    geometry = ct_geometry(scan_folder(ct_folder))
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == geometry.series_uid
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == {
        s.SOPInstanceUID for s in geometry.slices}
    masks, body = structure_masks(ds, geometry.grid, geometry.frame_of_reference, NameMapper())
    assert body is None and set(masks) == set(expected)
    for name, mask in expected.items():
        assert np.array_equal(masks[name].array, mask), name


def test_written_dose_and_structures_read_back(tmp_path: Path, dicom_ct: Path, phantom: Case) -> None:
    structures = {n: phantom.structures[n] for n in ("LeftParotid", "Mandible", "PTV70")}
    written = write_dicom_results(tmp_path, dicom_ct, phantom.dose, structures)
    assert [p.name for p in written] == ["rtdose.dcm", "rtstruct.dcm"]
    check_dose(tmp_path / "rtdose.dcm", dicom_ct, phantom.dose.array)
    check_structures(tmp_path / "rtstruct.dcm", dicom_ct, {n: m.array for n, m in structures.items()})
    kinds = {o.ReferencedROINumber: o.RTROIInterpretedType
             for o in pydicom.dcmread(tmp_path / "rtstruct.dcm").RTROIObservationsSequence}
    assert kinds == {1: "ORGAN", 2: "ORGAN", 3: "PTV"}


def test_a_dose_off_the_ct_grid_is_resampled_onto_it(tmp_path: Path, dicom_ct: Path, phantom: Case) -> None:
    cropped = phantom.dose.array[5:60, 3:50, 2:40]
    origin = phantom.dose.index_to_lps @ np.array([5, 3, 2, 1.0])
    dose = phantom.dose.with_array(phantom.dose.array.copy())
    dose = type(dose)(cropped, dose.spacing, tuple(origin[:3]), dose.direction)
    write_dicom_results(tmp_path, dicom_ct, dose, {})
    expected = np.zeros_like(phantom.dose.array)
    expected[5:60, 3:50, 2:40] = cropped
    check_dose(tmp_path / "rtdose.dcm", dicom_ct, expected)
    assert not (tmp_path / "rtstruct.dcm").exists()


def test_run_on_a_dicom_patient_writes_rtdose(tiny_models: Path, tmp_path: Path, dicom_ct: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["run", str(dicom_ct), "-o", str(out), "--device", "cpu", "--no-radiomics"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparison"] is not None  # the RTDOSE served as the reference dose
    check_dose(out / "rtdose.dcm", dicom_ct, on_ct_grid(out / "dose.nrrd", dicom_ct))
    assert not (out / "rtstruct.dcm").exists()  # no segmentation model here: nothing auto-segmented to export


def _run_with_auto_segmented_oars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Case, Path, Path]:
    """``run`` on a DICOM patient lacking Larynx and LeftParotid, which a stand-in model segments: the
    (40, 40, 32) phantom, the patient folder and the run's output."""
    fake_segmentation(monkeypatch, tmp_path)
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    small = make_phantom(shape=(40, 40, 32))
    kept = {n: m for n, m in small.structures.items() if n not in ("Larynx", "LeftParotid")}
    patient = write_dicom_patient(tmp_path / "patient", Case("p", small.ct, kept, small.dose, small.possible_dose_mask))
    out = tmp_path / "out"
    assert main(["run", str(patient), "-o", str(out), "--device", "cpu", "--no-radiomics"]) == 0
    return small, patient, out


def test_run_writes_the_auto_segmented_oars_as_rtstruct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, patient, out = _run_with_auto_segmented_oars(tmp_path, monkeypatch)
    check_structures(out / "rtstruct.dcm", patient, {n: small.structures[n].array for n in ("Larynx", "LeftParotid")})
    check_dose(out / "rtdose.dcm", patient, on_ct_grid(out / "dose.nrrd", patient))


def test_export_dicom_writes_a_results_folder(tmp_path: Path, dicom_ct: Path, phantom: Case,
                                              capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_volume(results / "dose.nrrd", phantom.dose)
    write_segmentation(results / "segmentation.seg.nrrd", phantom.structures)
    sources = {n: "auto" if n in ("LeftParotid", "RightParotid") else "patient" for n in phantom.structures}
    (results / "summary.json").write_text(json.dumps({"structures": sources}))
    out = tmp_path / "dicom_out"
    assert main(["export-dicom", str(results), "--ct", str(dicom_ct), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".doseseg-output.json", "rtdose.dcm", "rtstruct.dcm", "seg.dcm"]
    check_dose(out / "rtdose.dcm", dicom_ct, phantom.dose.array)
    check_structures(out / "rtstruct.dcm", dicom_ct,
                     {n: phantom.structures[n].array for n in ("LeftParotid", "RightParotid")})
    assert main(["export-dicom", str(results), "--ct", str(dicom_ct), "-o", str(out)]) == 1  # no overwrite
    assert "--force" in capsys.readouterr().err


def test_export_dicom_refuses_a_ct_folder_without_dicom(tmp_path: Path, dicom_ct: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_volume(results / "dose.nrrd", make_phantom().dose)
    shutil.copy(results / "dose.nrrd", tmp_path / "dose.nrrd")
    assert main(["export-dicom", str(results), "--ct", str(tmp_path / "results"), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "not a folder of DICOM files" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_run_and_export_write_a_dicom_seg_that_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """seg.dcm (highdicom): the auto-segmented organs on the CT's frames, read back by highdicom to the same masks;
    0 dciodvfy errors."""
    hd = pytest.importorskip("highdicom", reason="highdicom not installed")
    small, patient, out = _run_with_auto_segmented_oars(tmp_path, monkeypatch)
    assert main(["export-dicom", str(out), "--ct", str(patient), "-o", str(tmp_path / "export")]) == 0
    geometry = ct_geometry(scan_folder(patient))
    order = [s.SOPInstanceUID for s in geometry.slices]
    for path in (out / "seg.dcm", tmp_path / "export" / "seg.dcm"):
        seg = hd.seg.segread(path)
        assert seg.SeriesDescription.startswith("DoseSeg research")
        assert seg.FrameOfReferenceUID == geometry.frame_of_reference
        labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
        assert set(labels.values()) == {"Larynx", "LeftParotid"}
        assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
        volume = seg.get_pixels_by_source_instance(source_sop_instance_uids=order, segment_numbers=list(labels),
                                                   assert_missing_frames_are_empty=True)
        for n, (number, name) in enumerate(labels.items()):
            assert number == n + 1
            assert np.array_equal(volume[..., n].transpose(2, 1, 0).astype(bool), small.structures[name].array), name
        if shutil.which("dciodvfy"):
            from dicom_helpers import dciodvfy_errors

            assert dciodvfy_errors(path) == []
