"""Target doses are never guessed from a number that is not one; clinical
names (TG-263, Eclipse-style) map onto canonical ones; --names and --prescription everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.analysis.dosecheck import check_predicted_dose
from DoseSegLib.cli.main import build_parser, main
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import is_ptv, target_prescription
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.phantom import make_phantom
from DoseSegLib.run.pipeline import RunOptions


def _rename(folder: Path, old: str, new: str) -> None:
    (folder / "structures" / f"{old}.nrrd").rename(folder / "structures" / f"{new}.nrrd")


# --- 7. target names and prescriptions -----------------------------------------------------------------------

@pytest.mark.parametrize("name, canonical, gy, cgy", [
    ("PTV_7000", "PTV70", 70.0, True), ("PTV5600", "PTV56", 56.0, True), ("PTV_5940cGy", "PTV59.4", 59.4, True),
    ("PTV_70", "PTV70", 70.0, False), ("PTV 56Gy", "PTV56", 56.0, False), ("PTV_99", "PTV99", 99.0, False),
    ("PTV1", "PTV1", None, False), ("PTV2", "PTV2", None, False), ("ptv_3", "PTV3", None, False),
    ("PTV_9.5", "PTV9.5", None, False), ("PTV_High", "PTV_High", None, False), ("PTV_Low", "PTV_Low", None, False),
])
def test_target_dose_rules(name: str, canonical: str, gy: float | None, cgy: bool) -> None:
    """>= 100 is cGy (noted), < 10 is a number not a dose, PTV_High/Low are targets of unknown dose."""
    mapper = NameMapper()
    assert mapper.canonical(name) == canonical
    assert is_ptv(canonical) and target_prescription(canonical) == gy
    assert (mapper.note(name) is not None) == cgy


def test_cgy_target_is_read_as_gy_with_a_note(phantom_dir: Path) -> None:
    _rename(phantom_dir, "PTV70", "PTV_7000")
    case = read_patient(phantom_dir)
    assert case.targets == {"PTV70": 70.0, "PTV56": 56.0}
    assert case.original_names["PTV70"] == "PTV_7000"
    assert any("7000 read as cGy (70 Gy)" in note for note in case.notes)


def test_numbered_targets_are_unknown_until_prescribed(phantom_dir: Path, capsys: pytest.CaptureFixture,
                                                       tmp_path: Path) -> None:
    """``PTV1``/``PTV2`` were read as 1 and 2 Gy targets; now their dose is unknown and asked for."""
    _rename(phantom_dir, "PTV70", "PTV1")
    _rename(phantom_dir, "PTV56", "PTV2")
    case = read_patient(phantom_dir)
    assert case.targets == {} and case.unknown_targets == ["PTV1", "PTV2"]
    assert any("PTV1: dose unknown" in note for note in case.notes)
    code = main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "dose of targets PTV1, PTV2 is unknown" in err and "--prescription PTV1=70" in err
    assert not (tmp_path / "out" / phantom_dir.name).exists()
    code = main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / "out2"), "--device", "cpu",
                 "--prescription", "PTV1=70", "--prescription", "ptv_2=56"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out2" / phantom_dir.name / "dose.nrrd").is_file()


def test_high_and_low_targets_are_accepted_with_a_prescription(phantom_dir: Path) -> None:
    _rename(phantom_dir, "PTV70", "PTV_High")
    _rename(phantom_dir, "PTV56", "PTV_Low")
    assert read_patient(phantom_dir).unknown_targets == ["PTV_High", "PTV_Low"]
    options = RunOptions(prescriptions={"PTV_High": 70, "PTV_Low": 56})  # the Python API
    case = read_patient(phantom_dir, options.mapper())
    assert case.targets == {"PTV_High": 70.0, "PTV_Low": 56.0} and case.unknown_targets == []
    assert case.main_prescription == 70.0


def test_prescription_overrides_the_name(phantom_dir: Path) -> None:
    case = read_patient(phantom_dir, NameMapper(prescriptions={"PTV_70": 66}))
    assert case.targets["PTV70"] == 66.0


@pytest.mark.parametrize("value", ["PTV70", "=70", "PTV70=abc", "PTV70=7000", "PTV70=0", "PTV70=nan"])
def test_bad_prescriptions_are_refused_at_parse_time(value: str, capsys: pytest.CaptureFixture,
                                                     phantom_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["dvh", str(phantom_dir), "-o", str(tmp_path / "o"), "--prescription", value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--prescription" in err and ("NAME=GY" in err or "in Gy" in err)
    assert not (tmp_path / "o").exists()


def test_prescription_of_an_absent_structure_is_an_error(phantom_dir: Path) -> None:
    with pytest.raises(DoseSegError, match=r"--prescription names PTV_Boost.*targets: PTV56, PTV70"):
        read_patient(phantom_dir, NameMapper(prescriptions={"PTV_Boost": 60}))


def test_implausible_predicted_dose_is_refused_naming_patient_and_cause() -> None:
    case = align_case(make_phantom())
    body = case.possible_dose_mask.array
    fine = case.ct.with_array(np.where(body, 60.0, 0.0).astype(np.float32))
    check_predicted_dose(fine, case)
    with pytest.raises(DoseSegError, match=r"patient '.*': predicted maximum 95.0 Gy .*PTV70: 70 Gy.*--prescription"):
        check_predicted_dose(fine.with_array(np.where(body, 95.0, 0.0).astype(np.float32)), case)
    outside = fine.array.copy()
    outside[0, 0, 0] = 50.0  # a corner: air, far from the body
    with pytest.raises(DoseSegError, match="outside the body"):
        check_predicted_dose(fine.with_array(outside), case)


def test_a_wrong_target_dose_is_caught_before_writing(phantom_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """A 70 Gy target prescribed 20 Gy gives a prediction far above 1.3 x 20 Gy (31.7 Gy): refused, nothing
    written, when it is not normalised; normalised (factor 0.74, as ``run`` does: test_consistency.py), it is
    written flagged outside the model's domain, the prescription outside the trained levels named."""
    flags = ["--device", "cpu", "--prescription", "PTV70=20", "--prescription", "PTV56=16"]
    code = main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / "out"), "--no-normalise", *flags])
    err = capsys.readouterr().err
    assert code == 1 and f"patient '{phantom_dir.name}'" in err and "1.3 x the highest prescription" in err
    assert not (tmp_path / "out" / phantom_dir.name).exists()
    assert main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / "norm"), *flags]) == 0
    notes = (tmp_path / "norm" / phantom_dir.name / "notes.txt").read_text()
    assert "OUTSIDE THE MODEL'S DOMAIN" in notes and "PTV70 prescription 20 Gy outside the trained levels" in notes
    assert "normalised: PTV70 mean" in notes and "x the 20 Gy prescription" in notes and "factor 0.7" in notes


# --- 8. names: TG-263 and Eclipse-style variants, --names everywhere ----------------------------------------

@pytest.mark.parametrize("name, canonical", [
    ("BRSTEM", "Brainstem"), ("Brainstem", "Brainstem"), ("Lens - left", "Lens_L"), ("Lens_L", "Lens_L"),
    ("Optic Nerve - Rt", "OpticNrv_R"), ("OpticNrv_R", "OpticNrv_R"), ("Glnd_Submand_L", "Glnd_Submand_L"),
    ("Bone_Mandible", "Mandible"), ("Parotid - Lt", "LeftParotid"), ("Spinal Cord", "SpinalCord"),
    ("Cavity_Oral", "OralCavity"), ("Chiasm", "OpticChiasm"), ("External", "Body"), ("Cochlea_R", "Cochlea_R"),
])
def test_clinical_names_map_onto_canonical(name: str, canonical: str) -> None:
    assert NameMapper().canonical(name) == canonical


def test_the_names_table_is_consistent() -> None:
    """Every alias in the shipped table maps to exactly one canonical name (no alias claimed twice)."""
    import csv

    from DoseSegLib.core.names import NAMES_TABLE, _key

    owners: dict[str, set[str]] = {}
    with NAMES_TABLE.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for alias in (row["canonical"], row["tg263"], *row["aliases"].split("|")):
                owners.setdefault(_key(alias), set()).add(row["canonical"])
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}


def test_original_names_are_kept(phantom_dir: Path) -> None:
    _rename(phantom_dir, "Brainstem", "BRSTEM")
    _rename(phantom_dir, "LeftParotid", "Parotid - Lt")
    case = read_patient(phantom_dir)
    assert case.original_names["Brainstem"] == "BRSTEM" and case.original_names["LeftParotid"] == "Parotid - Lt"
    assert case.original_names["SpinalCord"] == "SpinalCord"


READERS = ("align", "import-openkbp", "dvh", "radiomics", "run", "predict-dose", "evaluate", "evaluate-seg",
           "features")


@pytest.mark.parametrize("command", READERS)
def test_names_and_prescription_on_every_command_that_reads_a_patient(command: str, tmp_path: Path) -> None:
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"Stem": "Brainstem"}))
    extra = ["--reference", "ref"] if command.startswith("evaluate") else []
    args = build_parser().parse_args([command, "p", *extra, "-o", "o", "--names", str(names),
                                      "--prescription", "PTV_High=70", "--prescription", "PTV_Low=56"])
    assert args.names == names and args.prescription == [("PTV_High", 70.0), ("PTV_Low", 56.0)]
