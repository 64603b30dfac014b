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
    """The pseudonyms of a de-identified rtdose.dcm are not another patient: with the run's key (--key-file) the
    identity check compares them with the CT's pseudonyms, and still refuses another patient's CT; without the key
    it cannot check and refuses."""
    from model_helpers import write_tiny_catalogue

    monkeypatch.setenv("DOSESEG_MODELS", str(write_tiny_catalogue(tmp_path / "models")))
    folder = patient[0]
    out = tmp_path / "out"
    assert main(["run", str(folder), "-o", str(out), "--device", "cpu", "--no-radiomics", "--anonymise",
                 "--key-file", str(key_file)]) == 0
    capsys.readouterr()
    assert main(["export-dicom", str(out), "--ct", str(folder), "-o", str(tmp_path / "exp")]) == 1
    assert "give --key-file" in capsys.readouterr().err and not (tmp_path / "exp").exists()
    key = ["--key-file", str(key_file)]
    assert main(["export-dicom", str(out), "--ct", str(folder), "-o", str(tmp_path / "exp"), *key]) == 0, \
        capsys.readouterr().err
    ct = pydicom.dcmread(folder / "CT0000.dcm")
    assert pydicom.dcmread(tmp_path / "exp" / "rtdose.dcm").PatientID == ct.PatientID
    other = write_dicom_patient(tmp_path / "other", make_phantom(shape=(32, 32, 24)), patient_id="OTHER-1")
    capsys.readouterr()
    assert main(["export-dicom", str(out), "--ct", str(other), "-o", str(tmp_path / "exp2"), *key]) == 1
    assert "another patient" in capsys.readouterr().err
    wrong = tmp_path / "wrong.key"
    wrong.write_text("another secret of at least sixteen bytes")
    assert main(["export-dicom", str(out), "--ct", str(folder), "-o", str(tmp_path / "exp3"), "--key-file",
                 str(wrong)]) == 1  # another key: other pseudonyms
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


FOLDERS = ("Zebulon_Quixote_MRN77X31", "Yolanda_Vexley_9931", "Zebulon_second_study")  # named after the patient
PERSON, PATIENT_ID = "Quixote^Zebulon^Xavier", "MRN77X31-Q"


def _every_output(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (names relative to it) with its bytes, the NRRD headers and payloads as written
    and gunzipped."""
    import gzip

    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".nrrd") and b"\n\n" in data:
                header, payload = data.split(b"\n\n", 1)
                data += gzip.decompress(payload) if b"encoding: gzip" in header else b""
            files[path.relative_to(out).as_posix()] = data
    return files


def test_run_anonymise_de_identifies_every_output(key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """A DICOM patient and an NRRD patient whose folders, name, ID and a structure name carry the patient's
    identity: with --anonymise no output file (one patient, and a cohort: per-patient folders, cohort_summary.csv)
    names the folder, the input path, the patient's name parts or ID, in its name or any of its bytes; the patient
    is named by the pseudonym of its DICOM objects (the folder's for an NRRD patient)."""
    import csv
    import json
    import shutil
    from dataclasses import replace

    from model_helpers import write_tiny_catalogue

    from DoseSegLib.io.dicom.deid import read_key
    from DoseSegLib.io.outputs import MARKER
    from DoseSegLib.io.phantom import write_phantom_patient

    monkeypatch.setenv("DOSESEG_MODELS", str(write_tiny_catalogue(tmp_path / "models")))
    inputs = tmp_path / "inputs"
    case = make_phantom(shape=(32, 32, 24))
    case = replace(case, structures={**case.structures, "Quixote_lesion": case.structures["PTV56"]})
    dicom = write_dicom_patient(inputs / FOLDERS[0], case, patient_id=PATIENT_ID, patient_name=PERSON)
    nrrd = inputs / FOLDERS[1]
    write_phantom_patient(nrrd, shape=(32, 32, 24))
    same = inputs / FOLDERS[2]  # another folder of the same patient: its outputs would take the first one's folder
    shutil.copytree(dicom, same)
    secrets = {*FOLDERS, "Zebulon", "Quixote", "Xavier", "Yolanda", "Vexley", PATIENT_ID, str(inputs),
               str(inputs.resolve()), "H&N plan Doe Jane"}
    key = ["--anonymise", "--key-file", str(key_file), "--device", "cpu"]
    assert main(["run", str(dicom), "-o", str(tmp_path / "one"), *key]) == 0
    console = capsys.readouterr().out
    assert f"de-identified outputs (--anonymise) in {tmp_path / 'one'}" in console
    assert main(["run", str(dicom), str(nrrd), str(same), "-o", str(tmp_path / "cohort"), "--no-radiomics",
                 *key]) == 1  # the second folder of the patient fails, the others are written
    err = capsys.readouterr().err
    assert f"{dicom}: de-identified outputs in {tmp_path / 'cohort'}" in err and "same pseudonym" in err
    assert f"{same}: de-identified outputs" not in err

    deid = Deidentifier(read_key(key_file))
    pseudonym = pydicom.dcmread(tmp_path / "one" / "rtdose.dcm").PatientID
    assert pseudonym == deid.pseudonym(PATIENT_ID) and deid.pseudonym(FOLDERS[1]).startswith("DS-")
    cohort = tmp_path / "cohort"
    assert sorted(p.name for p in cohort.iterdir()) == sorted([MARKER, "cohort_summary.csv", pseudonym,
                                                               deid.pseudonym(FOLDERS[1])])
    with (cohort / "cohort_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["patient"] for row in rows] == [pseudonym, deid.pseudonym(FOLDERS[1]), pseudonym]
    assert [row["status"] for row in rows] == ["ok", "ok", "failed"] and "same pseudonym" in rows[2]["error"]
    for summary in (tmp_path / "one" / "summary.json", cohort / pseudonym / "summary.json"):
        written = json.loads(summary.read_text())
        assert written["patient"] == pseudonym and "anonymise" in written["source"]
        assert "ANON_lesion" in written["structures"] and "ANON_lesion" in written["original_names"].values()
    assert pydicom.dcmread(cohort / pseudonym / "rtdose.dcm").PatientID == pseudonym
    assert "ANON_lesion" in (tmp_path / "one" / "dvh.csv").read_text()
    assert (tmp_path / "one" / "radiomics.csv").is_file()
    for out in (tmp_path / "one", cohort):
        files = _every_output(out)
        assert len(files) >= 15  # report, NRRDs, CSVs, radiomics, rtdose.dcm, summary.json, marker
        for name, data in files.items():
            for secret in secrets:
                assert secret.lower() not in name.lower(), (name, secret)
                assert secret.lower().encode() not in data.lower(), (name, secret)


def test_anonymised_structure_names_stay_distinct(tmp_path: Path) -> None:
    """Two structures named after the patient become ANON..., ANON..._2; the prescriptions, fine masks, original
    names and notes (each structure by its new name) follow them; the input path and folder name become the
    pseudonym."""
    from dataclasses import replace

    from DoseSegLib.run.anonymise import PatientIdentity, anonymise_case

    case = make_phantom(shape=(24, 24, 16))
    ptv = case.structures["PTV70"]
    folder = tmp_path / "Quixote_2024"
    case = replace(case, name=folder.name, structures={"Zebulon boost": ptv, "Quixote boost": ptv, "ANON boost": ptv},
                   prescriptions={"Zebulon boost": 70.0}, fine_structures={"Quixote boost": ptv},
                   original_names={"Zebulon boost": "zebulon BOOST"},
                   notes=[f"{folder}/ct.nrrd: Quixote_2024 read",
                          "prescription of Quixote boost: 56 Gy, of ANON boost: 70"])
    who = PatientIdentity("DS-0123456789ABCDEF", (str(folder),), folder.name, frozenset({"Zebulon", "Quixote"}))
    clean = anonymise_case(case, who)
    assert list(clean.structures) == ["ANON boost_2", "ANON boost_3", "ANON boost"] and clean.name == who.pseudonym
    assert clean.prescriptions == {"ANON boost_2": 70.0} and list(clean.fine_structures) == ["ANON boost_3"]
    assert clean.original_names == {"ANON boost_2": "ANON BOOST"}
    assert clean.notes == ["DS-0123456789ABCDEF/ct.nrrd: DS-0123456789ABCDEF read",
                           "prescription of ANON boost_3: 56 Gy, of ANON boost: 70"]


@pytest.mark.parametrize(("name", "parts", "text", "clean"), [
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", {"Yamada", "Tarou", "山田", "太郎", "山田太郎", "やまだ", "たろう"},
     "PTV_Tarou 山田太郎 Ring_やまだ", "PTV_ANON ANON Ring_ANON"),
    ("Doe^Jane\\Roe^Janet", {"Doe", "Jane", "Roe", "Janet"}, "Roe_boost Janet", "ANON_boost ANON"),
    ("Garcia-Lopez^Maria", {"Garcia", "Lopez", "Garcia-Lopez", "Maria"}, "Ring_Garcia Lopez_PTV", "Ring_ANON ANON_PTV"),
    ("Sean.^O'Neil", {"Sean", "O'Neil"}, "Sean_eval", "ANON_eval"),
    ("Smith, John", {"Smith", "John"}, "PTV_Smith", "PTV_ANON"),
    ("MRN-556677", {"MRN-556677", "556677"}, "case 556677", "case ANON"),
])
def test_every_name_group_value_and_part_identifies(name: str, parts: set[str], text: str, clean: str) -> None:
    """Name groups (``=``), values (``\\``), components (``^``, spaces, commas) and their parts (hyphens, dots)
    each identify the patient; CJK parts from 2 characters; initials and single CJK characters do not."""
    from DoseSegLib.io.dicom.deid import ANONYMOUS, identifying_parts, scrub_values

    found = identifying_parts(name)
    assert parts <= found and not {part for part in found if len(part) < 2}
    assert scrub_values(text, found, ANONYMOUS) == clean
    assert identifying_parts("Ng^Li") == {"Ng^Li", "NgLi"} and identifying_parts("李^明") == {"李^明", "李明"}


def test_run_anonymise_names_no_name_group_and_no_input_file(key_file: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A Japanese name of three groups and a structure PTV_Tarou, and stray files (a PDF whose name holds the
    birth date and MRN, in a sub-folder named likewise) in the DICOM patient folder: no output names any of
    them (the warning about the stray file gives its count only)."""
    import json
    from dataclasses import replace

    from model_helpers import write_tiny_catalogue

    monkeypatch.setenv("DOSESEG_MODELS", str(write_tiny_catalogue(tmp_path / "models")))
    case = make_phantom(shape=(32, 32, 24))
    case = replace(case, structures={**case.structures, "PTV_Tarou": case.structures["PTV56"]})
    folder = write_dicom_patient(tmp_path / "patient", case, patient_id="MRN998877")
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 192", "Yamada^Tarou=山田^太郎=やまだ^たろう"
        ds.save_as(path)
    (folder / "Doe_1944-01-01_MRN-556677_plan-report.pdf").write_bytes(b"%PDF-1.4\n")
    (folder / "ACC77-19440101").mkdir()
    (folder / "ACC77-19440101" / "notes 1944.txt").write_text("x")
    out = tmp_path / "out"
    assert main(["run", str(folder), "-o", str(out), "--no-radiomics", "--device", "cpu", "--anonymise",
                 "--key-file", str(key_file), "--prescription", "PTV_Tarou=56"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "PTV_ANON" in summary["structures"]
    assert any("ignored 2 file(s) that are not DICOM (<file>, <file>)" in w for w in summary["warnings"])
    secrets = ["Yamada", "Tarou", "山田", "太郎", "やまだ", "たろう", "1944-01-01", "19440101", "notes 1944", "556677",
               "plan-report", "ACC77", "MRN998877"]
    for name, data in _every_output(out).items():
        for secret in secrets:
            assert secret.lower() not in name.lower(), (name, secret)
            assert secret.lower().encode() not in data.lower(), (name, secret)
