"""``--anonymise``: PS3.15 Basic Application Level Confidentiality Profile on what DoseSeg writes.

The de-identified export must share no identifying value and no UID with its input, keep its
objects linked to each other (same input UID -> same new UID), and use a keyed pseudonym.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest
from dicom_helpers import write_dicom_patient

from DoseSegLib.cli.main import main
from DoseSegLib.io.dicom.deid import STANDARD_UID_ROOT, Deidentifier
from DoseSegLib.io.patient import write_segmentation, write_volume
from DoseSegLib.io.phantom import make_phantom

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "StudyDescription", "AccessionNumber",
               "ReferringPhysicianName", "StudyID", "StudyDate", "StudyTime", "PatientSex")


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A DICOM patient (CT with a full identity, RTSTRUCT, RTDOSE, RTPLAN) and a results folder."""
    root = tmp_path_factory.mktemp("anon")
    case = make_phantom(shape=(32, 32, 24))
    folder = write_dicom_patient(root / "patient", case)
    results = root / "results"
    results.mkdir()
    write_volume(results / "dose.nrrd", case.dose)
    write_segmentation(results / "segmentation.seg.nrrd", {"LeftParotid": case.structures["LeftParotid"]})
    return folder, results


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "key.txt"
    path.write_text("c2VjcmV0IG9mIHRoZSB1c2VyIDEyMzQ1Njc4OTA=\n")
    return path


def _values(ds: pydicom.Dataset) -> list[pydicom.DataElement]:
    return list(ds.iterall())


def input_identity(folder: Path) -> tuple[set[str], set[str]]:
    """Every non-standard UID and every identifying value of the input files."""
    uids, values = set(), set()
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for element in [*_values(ds), *_values(ds.file_meta)]:
            software = element.keyword == "ImplementationClassUID"  # the writing library's, not the patient's
            if element.VR == "UI" and element.value and not software and not str(element.value).startswith(
                    STANDARD_UID_ROOT):
                uids.add(str(element.value))
            if element.keyword in IDENTIFYING and str(element.value):
                values.add(str(element.value))
    return uids, values


def export(patient: tuple[Path, Path], out: Path, key_file: Path | None) -> int:
    folder, results = patient
    key = ["--key-file", str(key_file)] if key_file else []
    return main(["export-dicom", str(results), "--ct", str(folder), "-o", str(out), "--anonymise", *key])


def test_anonymised_export_shares_no_identifying_value_or_uid(patient, key_file: Path, tmp_path: Path) -> None:
    assert export(patient, tmp_path / "out", key_file) == 0
    uids, values = input_identity(patient[0])
    assert {"Test^Patient", "DS-TEST", "H&N plan Doe Jane", "19600101", "A123", "Ref^Doc"} <= values
    written = sorted((tmp_path / "out").glob("*.dcm"))
    assert [p.name for p in written] == ["rtdose.dcm", "rtstruct.dcm", "seg.dcm"]
    for path in written:
        ds = pydicom.dcmread(path)
        data = path.read_bytes()
        for element in [*_values(ds), *_values(ds.file_meta)]:
            if element.VR == "UI":
                assert str(element.value) not in uids, (path.name, element.keyword)
            if element.keyword in IDENTIFYING and element.keyword not in ("PatientName", "PatientID"):
                assert element.value in ("", None), (path.name, element.keyword)  # Type 2: kept, empty
            elif element.VR != "SQ":
                assert str(element.value) not in {v for v in values if len(v) >= 4}, (path.name, element.keyword)
        for value in values:  # names, IDs, descriptions anywhere in the bytes (digit strings, dates and times,
            if len(value) >= 4 and not value.isdigit():  # could occur by chance in a random UID: checked above)
                assert value.encode() not in data, (path.name, value)
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == ds.PatientID
        assert "StudyDescription" not in ds and ds.StudyDate == "" and ds.PatientBirthDate == ""
        assert "Basic Application Level Confidentiality Profile" in ds.DeidentificationMethod[0]
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_new_uids_keep_the_objects_linked(patient, key_file: Path, tmp_path: Path) -> None:
    for run in ("a", "b"):
        assert export(patient, tmp_path / run, key_file) == 0
    dose = {run: pydicom.dcmread(tmp_path / run / "rtdose.dcm") for run in ("a", "b")}
    structures = pydicom.dcmread(tmp_path / "a" / "rtstruct.dcm")
    frame = structures.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == dose["a"].FrameOfReferenceUID == structures.FrameOfReferenceUID
    study = frame.RTReferencedStudySequence[0]
    assert structures.StudyInstanceUID == dose["a"].StudyInstanceUID == study.ReferencedSOPInstanceUID
    series = study.RTReferencedSeriesSequence[0]
    images = {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence}
    assert len(images) == 24  # one new UID per CT slice
    # one key: the same pseudonym and study UID in every run; the dose still names the (renamed) RTPLAN
    assert dose["a"].PatientID == dose["b"].PatientID and dose["a"].StudyInstanceUID == dose["b"].StudyInstanceUID
    plan = pydicom.dcmread(patient[0] / "rtplan.dcm")
    assert dose["a"].ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID != plan.SOPInstanceUID


def test_pseudonym_is_keyed_and_ids_never_collide() -> None:
    one, other = Deidentifier(b"first secret key 0123"), Deidentifier(b"other secret key 0123")
    assert one.pseudonym("12345") == one.pseudonym("12345") != other.pseudonym("12345")
    unsalted = hashlib.sha256(b"doseseg:12345").hexdigest()[:12].upper()
    assert unsalted not in one.pseudonym("12345")
    assert one.pseudonym("", "Doe^Jane", "19600101") != one.pseudonym("", "Roe^Ann", "19700202")  # no ID: no clash
    assert one.uid("1.2.3.4") == one.uid("1.2.3.4") != one.uid("1.2.3.5")
    assert one.uid("1.2.3.4").startswith("2.25.") and len(one.uid("1.2.3.4")) <= 64
    assert one.uid("1.2.840.10008.5.1.4.1.1.481.2") == "1.2.840.10008.5.1.4.1.1.481.2"  # a class UID stays


def test_anonymise_refuses_to_run_without_a_key(patient, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert export(patient, tmp_path / "out", None) == 1
    assert "--key-file" in capsys.readouterr().err and not (tmp_path / "out").exists()
    short = tmp_path / "short.key"
    short.write_text("abc")
    assert export(patient, tmp_path / "out", short) == 1
    assert "at least 16" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_without_anonymise_the_identity_is_kept(patient, tmp_path: Path) -> None:
    folder, results = patient
    assert main(["export-dicom", str(results), "--ct", str(folder), "-o", str(tmp_path / "o")]) == 0
    ds = pydicom.dcmread(tmp_path / "o" / "rtdose.dcm")
    ct = pydicom.dcmread(folder / "CT0000.dcm")
    assert ds.PatientID == ct.PatientID and ds.StudyInstanceUID == ct.StudyInstanceUID
    assert "PatientIdentityRemoved" not in ds


def test_run_anonymise_de_identifies_its_dicom_outputs(patient, key_file: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    from model_helpers import write_tiny_catalogue

    monkeypatch.setenv("DOSESEG_MODELS", str(write_tiny_catalogue(tmp_path / "models")))
    folder = patient[0]
    command = ["run", str(folder), "-o", str(tmp_path / "out"), "--device", "cpu", "--no-radiomics", "--anonymise"]
    assert main(command) == 1 and "--key-file" in capsys.readouterr().err  # refused before any work
    assert main([*command, "--key-file", str(key_file)]) == 0
    assert "no rtstruct.dcm: nothing was auto-segmented" in capsys.readouterr().out
    uids, _ = input_identity(folder)
    ds = pydicom.dcmread(tmp_path / "out" / "rtdose.dcm")
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("DS-")
    for element in ds.iterall():
        assert element.VR != "UI" or str(element.value) not in uids, element.keyword
        assert element.keyword not in ("StudyDescription", "PatientBirthDate") or not element.value


def test_an_anonymised_runs_results_export_with_their_own_ct(patient, key_file: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """The pseudonyms of a de-identified rtdose.dcm are not another patient: the identity check reads the run's
    source folder instead, and still refuses another patient's CT."""
    from model_helpers import write_tiny_catalogue

    monkeypatch.setenv("DOSESEG_MODELS", str(write_tiny_catalogue(tmp_path / "models")))
    folder = patient[0]
    out = tmp_path / "out"
    assert main(["run", str(folder), "-o", str(out), "--device", "cpu", "--no-radiomics", "--anonymise",
                 "--key-file", str(key_file)]) == 0
    assert main(["export-dicom", str(out), "--ct", str(folder), "-o", str(tmp_path / "exp")]) == 0, \
        capsys.readouterr().err
    ct = pydicom.dcmread(folder / "CT0000.dcm")
    assert pydicom.dcmread(tmp_path / "exp" / "rtdose.dcm").PatientID == ct.PatientID
    other = write_dicom_patient(tmp_path / "other", make_phantom(shape=(32, 32, 24)), patient_id="OTHER-1")
    capsys.readouterr()
    assert main(["export-dicom", str(out), "--ct", str(other), "-o", str(tmp_path / "exp2")]) == 1
    assert "another patient" in capsys.readouterr().err


def test_roi_names_lose_the_patients_name_and_id(tmp_path: Path, key_file: Path) -> None:
    """--all-structures with ROIs named after the patient (Test^Patient, DS-TEST): the ID and name parts are
    replaced by ANON in every free-text value, the other words kept."""
    from dataclasses import replace

    case = make_phantom(shape=(32, 32, 24))
    named = {"Patient_Test boost": case.structures["PTV70"], "MRN ds-test": case.structures["PTV56"]}
    case = replace(case, structures={**case.structures, **named})
    folder = write_dicom_patient(tmp_path / "patient", case)
    results = tmp_path / "results"
    results.mkdir()
    write_segmentation(results / "segmentation.seg.nrrd", case.structures)
    assert main(["export-dicom", str(results), "--ct", str(folder), "-o", str(tmp_path / "o"), "--all-structures",
                 "--anonymise", "--key-file", str(key_file)]) == 0
    path = tmp_path / "o" / "rtstruct.dcm"
    names = {roi.ROIName for roi in pydicom.dcmread(path).StructureSetROISequence}
    assert {"ANON_ANON boost", "MRN ANON", "Brainstem", "PTV70"} <= names
    data = path.read_bytes().lower()
    assert b"ds-test" not in data and b"patient_test" not in data
