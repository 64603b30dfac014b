"""Every object DoseSeg writes passes dciodvfy (dicom3tools) with 0 errors and pydicom's strict reading.

The CT carries its Type 2 attributes (as a scanner's does); a CT that lacks some gives objects
where they are written empty, never dropped. dciodvfy is a Debian package
(``apt-get install dicom3tools``); the tests that run it skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import DCIODVFY, dciodvfy_errors, write_ct_series, write_dicom_patient

from DoseSegLib.core.case import Case
from DoseSegLib.io.dicom.deid import Deidentifier
from DoseSegLib.io.dicom.export import short_text
from DoseSegLib.io.dicom.results import read_dicom_target, write_dicom_results
from DoseSegLib.io.dicom.seg import seg_available, write_dicom_seg
from DoseSegLib.io.phantom import make_phantom

needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (apt-get install dicom3tools)")
TYPE2 = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber", "OperatorsName",
         "StudyDate", "StudyTime", "PositionReferenceIndicator")


def strict_read(path: Path) -> pydicom.Dataset:
    """pydicom's strictest reading: preamble, DICM and file meta required (force off), every value validated
    (reading_validation_mode RAISE: a value its VR does not allow raises). pydicom 3's dcmread has no
    ``enforce_file_format`` (only save_as has), this is its reading counterpart."""
    from pydicom import config

    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        ds = pydicom.dcmread(path, force=False)
        for element in ds.iterall():
            _ = element.value  # values are converted (and validated) on first access
    finally:
        config.settings.reading_validation_mode = previous
    assert ds.preamble is not None and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    return ds


@pytest.fixture(scope="module")
def small() -> Case:
    return make_phantom(shape=(32, 32, 24))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, small: Case) -> dict[str, Path]:
    """DoseSeg's objects for a CT with an RTPLAN, without one, and de-identified."""
    root = tmp_path_factory.mktemp("valid")
    with_plan = write_dicom_patient(root / "with_plan", small)
    bare = root / "bare"
    write_ct_series(bare, small.ct)
    structures = {n: small.structures[n] for n in ("Brainstem", "PTV70")}
    folders = {}
    for name, ct, deid in (("plan", with_plan, None), ("no_plan", bare, None),
                           ("anonymised", with_plan, Deidentifier(b"a secret of the user's 1234"))):
        out = root / name
        out.mkdir()
        write_dicom_results(out, ct, small.dose, structures, deid=deid)
        if seg_available():
            write_dicom_seg(out / "seg.dcm", read_dicom_target(ct, deid=deid), {"Brainstem": structures["Brainstem"]})
        folders[name] = out
    return folders


@needs_dciodvfy
@pytest.mark.parametrize("export", ["plan", "no_plan", "anonymised"])
@pytest.mark.parametrize("name", ["rtdose.dcm", "rtstruct.dcm", "seg.dcm"])
def test_dciodvfy_finds_no_error(exports: dict[str, Path], export: str, name: str) -> None:
    if name == "seg.dcm" and not seg_available():
        pytest.skip("highdicom not installed")
    assert dciodvfy_errors(exports[export] / name) == []


@pytest.mark.parametrize("export", ["plan", "no_plan", "anonymised"])
def test_objects_follow_their_iods(exports: dict[str, Path], export: str) -> None:
    dose = strict_read(exports[export] / "rtdose.dcm")
    structures = strict_read(exports[export] / "rtstruct.dcm")
    for ds in (dose, structures):
        for keyword in TYPE2:
            assert keyword in ds, keyword  # Type 2: present, empty when unknown
        assert "research" in ds.SeriesDescription.lower()
    assert dose.InstanceNumber == 1 and dose.BitsAllocated == 16 and "ApprovalStatus" not in dose
    assert "research" in dose.DoseComment
    assert structures.ApprovalStatus == "UNAPPROVED" and "ContentDate" not in structures
    assert "ContentTime" not in structures
    if export == "no_plan":
        assert dose.DoseSummationType == "PLAN_OVERVIEW" and "ReferencedRTPlanSequence" not in dose
    else:
        assert dose.DoseSummationType == "PLAN" and len(dose.ReferencedRTPlanSequence) == 1


def test_the_dose_references_the_rtplan_read_with_the_ct(exports: dict[str, Path], tmp_path: Path) -> None:
    plan = pydicom.dcmread(exports["plan"].parent / "with_plan" / "rtplan.dcm")
    dose = pydicom.dcmread(exports["plan"] / "rtdose.dcm")
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID


def test_sixteen_bit_dose_keeps_the_dose_within_its_step(exports: dict[str, Path], small: Case) -> None:
    dose = pydicom.dcmread(exports["no_plan"] / "rtdose.dcm")
    step = float(dose.DoseGridScaling)
    assert step <= small.dose.array.max() / 65000 * 1.0001  # 1 mGy at 65 Gy
    values = dose.pixel_array.transpose(2, 1, 0) * step
    assert np.abs(values - small.dose.array).max() <= step / 2 + 1e-6


def test_type2_attributes_the_ct_lacks_are_written_empty(tmp_path: Path, small: Case) -> None:
    write_ct_series(tmp_path / "ct", small.ct)
    for path in (tmp_path / "ct").glob("*.dcm"):  # a CT stripped of its optional patient/study attributes
        ds = pydicom.dcmread(path)
        for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber", "StudyID"):
            delattr(ds, keyword)
        ds.save_as(path, enforce_file_format=True)
    out = tmp_path / "out"
    out.mkdir()
    write_dicom_results(out, tmp_path / "ct", small.dose, {"Brainstem": small.structures["Brainstem"]})
    for name in ("rtdose.dcm", "rtstruct.dcm"):
        ds = pydicom.dcmread(out / name)
        for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber", "StudyID"):
            assert keyword in ds and ds[keyword].value in ("", None), (name, keyword)
        if DCIODVFY:
            assert dciodvfy_errors(out / name) == [], name


def test_descriptions_are_cut_at_a_word_never_mid_word() -> None:
    text = "DoseSeg research, not clinical: auto-segmented structures of the left parotid and the mandible"
    cut = short_text(text)
    assert len(cut) <= 64 and text.startswith(cut) and text[len(cut)] == " "
    assert short_text("short text") == "short text"
    assert short_text("x" * 80) == "x" * 64  # one word longer than the limit: cut, nothing else possible
