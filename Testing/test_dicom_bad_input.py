"""DICOM patients that must be refused (one line, naming the file) or handled by a documented choice."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import write_ct_series, write_dicom_patient
from pydicom.dataset import Dataset

from DoseSegLib.cli.main import main
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.patient import read_patient, write_volume
from DoseSegLib.io.phantom import make_phantom


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dicom_patient(tmp_path_factory.mktemp("dicom") / "phantom", make_phantom())


@pytest.fixture
def patient(source: Path, tmp_path: Path) -> Path:
    """A fresh copy of the phantom DICOM patient to spoil."""
    return Path(shutil.copytree(source, tmp_path / "patient"))


def edit(path: Path, change: Callable[[Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def refused(folder: Path, *words: str, capsys: pytest.CaptureFixture | None = None, **kwargs) -> str:
    """The message read_patient refuses ``folder`` with; checks the CLI prints it on one line too."""
    with pytest.raises(DoseSegError) as error:
        read_patient(folder, **kwargs)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
    if capsys is not None:
        assert main(["align", str(folder), "-o", str(folder.parent / "out")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("doseseg: error: ") and "Traceback" not in err
        assert not (folder.parent / "out").exists()
    return message


def test_missing_slice_is_refused(patient: Path, capsys: pytest.CaptureFixture) -> None:
    (patient / "CT0020.dcm").unlink()
    refused(patient, "uneven slice spacing", "5.00 mm", "1 slice(s) missing", capsys=capsys)


def test_uneven_spacing_is_refused(patient: Path) -> None:
    edit(patient / "CT0010.dcm", lambda ds: setattr(ds, "ImagePositionPatient",
                                                    [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] + 1]))
    refused(patient, "uneven slice spacing")


def test_duplicate_slice_is_refused(patient: Path) -> None:
    ds = pydicom.dcmread(patient / "CT0010.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(patient / "copy.dcm")
    refused(patient, "two slices at the same position")


def test_rtstruct_in_another_frame_of_reference_is_refused(patient: Path, capsys: pytest.CaptureFixture) -> None:
    other = pydicom.uid.generate_uid()

    def move(ds: Dataset) -> None:
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = other
        for roi in ds.StructureSetROISequence:
            roi.ReferencedFrameOfReferenceUID = other

    edit(patient / "rtstruct.dcm", move)
    refused(patient, "rtstruct.dcm", "Frame of Reference", other, capsys=capsys)


def test_rtdose_in_relative_units_is_refused(patient: Path, capsys: pytest.CaptureFixture) -> None:
    edit(patient / "rtdose.dcm", lambda ds: setattr(ds, "DoseUnits", "RELATIVE"))
    refused(patient, "rtdose.dcm", "DoseUnits is RELATIVE", "GY", capsys=capsys)


def test_a_dose_in_cgy_is_refused_naming_the_rtdose(patient: Path, capsys: pytest.CaptureFixture) -> None:
    """An RTDOSE whose values are cGy written as GY: the refusal names the patient's RTDOSE, not a dose.nrrd."""
    edit(patient / "rtdose.dcm", lambda ds: setattr(ds, "DoseGridScaling", str(float(ds.DoseGridScaling) * 100)))
    assert main(["dvh", str(patient), "-o", str(patient.parent / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{patient} (RTDOSE)" in err and "cGy" in err and "dose.nrrd" not in err


def test_rtdose_in_another_frame_of_reference_is_refused(patient: Path) -> None:
    edit(patient / "rtdose.dcm", lambda ds: setattr(ds, "FrameOfReferenceUID", pydicom.uid.generate_uid()))
    refused(patient, "rtdose.dcm", "Frame of Reference")


def test_two_beam_doses_are_refused_and_a_plan_sum_is_chosen(patient: Path) -> None:
    shutil.copy(patient / "rtdose.dcm", patient / "beam.dcm")
    edit(patient / "beam.dcm", lambda ds: (setattr(ds, "DoseSummationType", "BEAM"),
                                           setattr(ds, "SOPInstanceUID", pydicom.uid.generate_uid())))
    assert read_patient(patient).dose is not None  # the PLAN sum wins over a beam dose
    edit(patient / "rtdose.dcm", lambda ds: setattr(ds, "DoseSummationType", "BEAM"))
    refused(patient, "2 RTDOSE files", "not exactly one PLAN sum")


def test_two_ct_series_are_refused_unless_the_rtstruct_or_series_says(patient: Path, tmp_path: Path) -> None:
    ct = make_phantom().ct
    frame = str(pydicom.dcmread(patient / "CT0000.dcm").FrameOfReferenceUID)
    second = write_ct_series(tmp_path / "other", ct.with_array(ct.array + 1), frame=frame)
    for path in second:
        shutil.move(path, patient / f"other_{path.name}")
    assert np.array_equal(read_patient(patient).ct.array, ct.array)  # the series the RTSTRUCT was drawn on
    (patient / "rtstruct.dcm").unlink()
    message = refused(patient, "2 CT series", "--series UID", "48 slices")
    other_uid = str(pydicom.dcmread(patient / "other_CT0000.dcm").SeriesInstanceUID)
    assert other_uid in message
    assert np.array_equal(read_patient(patient, series=other_uid).ct.array, ct.array + 1)
    refused(patient, "no CT series 1.2.3", series="1.2.3")


def test_two_patients_in_one_folder_are_refused(patient: Path, tmp_path: Path) -> None:
    for path in write_ct_series(tmp_path / "other", make_phantom().ct, patient_id="SOMEONE-ELSE"):
        shutil.move(path, patient / f"other_{path.name}")
    message = refused(patient, "2 patients")
    assert "SOMEONE-ELSE" not in message  # identities stay out of messages


def test_nrrd_and_dicom_in_one_folder_are_refused(patient: Path, capsys: pytest.CaptureFixture) -> None:
    write_volume(patient / "ct.nrrd", make_phantom().ct)
    refused(patient, "both NRRD files", "DICOM files", "one format", capsys=capsys)


def test_empty_roi_is_skipped_with_a_warning(patient: Path, caplog: pytest.LogCaptureFixture) -> None:
    def add_empty(ds: Dataset) -> None:
        roi = Dataset()
        roi.ROINumber, roi.ROIName = 99, "Empty_Placeholder"
        roi.ReferencedFrameOfReferenceUID = ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
        ds.StructureSetROISequence.append(roi)
        contour = Dataset()
        contour.ReferencedROINumber = 99
        ds.ROIContourSequence.append(contour)

    edit(patient / "rtstruct.dcm", add_empty)
    with caplog.at_level(logging.WARNING):
        case = read_patient(patient)
    assert "Empty_Placeholder" not in case.structures and len(case.structures) == 9
    assert "ROI 'Empty_Placeholder' has no closed contour; skipped" in caplog.text


def test_two_rois_with_one_canonical_name_are_refused(patient: Path) -> None:
    edit(patient / "rtstruct.dcm", lambda ds: setattr(ds.StructureSetROISequence[1], "ROIName", "brain_stem"))
    refused(patient, "rtstruct.dcm", "'brain_stem' and 'Brainstem' both map to structure 'Brainstem' (rename one)")


def test_garbage_with_a_dicom_preamble_is_refused(patient: Path) -> None:
    (patient / "CT0005.dcm").write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00abc")
    refused(patient, "1 slice(s) missing")  # the damaged file is not DICOM, so its slice is missing


def test_a_series_is_chosen_by_option_or_by_one_of_its_files(patient: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    ct = make_phantom().ct
    for path in write_ct_series(tmp_path / "other", ct.with_array(ct.array + 1)):
        shutil.move(path, patient / f"other_{path.name}")
    (patient / "rtstruct.dcm").unlink()
    (patient / "rtdose.dcm").unlink()
    (patient / "rtplan.dcm").unlink()
    assert np.array_equal(read_patient(patient / "other_CT0007.dcm").ct.array, ct.array + 1)
    uid = str(pydicom.dcmread(patient / "other_CT0000.dcm").SeriesInstanceUID)
    assert main(["align", str(patient), "--series", uid, "-o", str(tmp_path / "out")]) == 0
    assert np.array_equal(read_patient(tmp_path / "out").ct.array, ct.array + 1)
    (tmp_path / "notes.txt").write_text("x")
    refused(tmp_path / "notes.txt", "not a patient folder, a DICOMDIR or a DICOM file")


def test_an_rt_file_given_as_the_patient_reads_its_folder(patient: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = read_patient(patient)
    for name in ("rtstruct.dcm", "rtdose.dcm", "rtplan.dcm"):
        with caplog.at_level(logging.WARNING):
            case = read_patient(patient / name)
        assert f"not a CT slice: reading the patient folder {patient}" in caplog.text
        assert np.array_equal(case.ct.array, whole.ct.array) and set(case.structures) == set(whole.structures)


def test_dvh_and_radiomics_take_series(patient: Path, tmp_path: Path) -> None:
    """--series on dvh and radiomics (as on run and align): a folder with two CT series and no RTSTRUCT."""
    ct = make_phantom().ct
    for path in write_ct_series(tmp_path / "other", ct.with_array(ct.array + 1)):
        shutil.move(path, patient / f"other_{path.name}")
    (patient / "rtstruct.dcm").rename(tmp_path / "rtstruct.dcm")
    uid = str(pydicom.dcmread(patient / "CT0000.dcm").SeriesInstanceUID)
    common = ["--segmentation", str(tmp_path / "rtstruct.dcm"), "--series", uid]
    assert main(["dvh", str(patient), *common, "-o", str(tmp_path / "dvh")]) == 0
    assert (tmp_path / "dvh" / "dvh.csv").is_file()
    assert main(["dvh", str(patient), "--segmentation", str(tmp_path / "rtstruct.dcm"),
                 "-o", str(tmp_path / "dvh2")]) == 1  # two series, none named: refused
    pytest.importorskip("radiomics", reason="pyradiomics not installed")
    assert main(["radiomics", str(patient), *common, "-o", str(tmp_path / "rad")]) == 0


def test_slices_of_another_size_or_spacing_are_refused(patient: Path) -> None:
    edit(patient / "CT0003.dcm", lambda ds: setattr(ds, "PixelSpacing", [2.0, 2.0]))
    refused(patient, "the CT slices differ in PixelSpacing")


def test_tilted_series_is_refused(patient: Path) -> None:
    for k, path in enumerate(sorted(patient.glob("CT*.dcm"))):
        edit(path, lambda ds, k=k: setattr(ds, "ImagePositionPatient",
                                           [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1] + 0.5 * k,
                                            ds.ImagePositionPatient[2]]))
    refused(patient, "gantry tilt")


@pytest.mark.parametrize("tag", [b"\x06\x30\x24\x00", b"\x06\x30\x84\x00"],
                         ids=["ReferencedFrameOfReferenceUID", "ReferencedROINumber"])
def test_a_damaged_value_inside_a_sequence_is_named(patient: Path, tag: bytes, capsys: pytest.CaptureFixture) -> None:
    """A value representation spoiled in a nested item (not only at the top level) gives the file's one-line error."""
    path = patient / "rtstruct.dcm"
    data = path.read_bytes()
    at = data.index(tag)  # only inside the StructureSet/ROIContour sequences
    path.write_bytes(data[:at + 4] + b"U@" + data[at + 6:])
    refused(patient, "rtstruct.dcm", "damaged DICOM file", capsys=capsys)
