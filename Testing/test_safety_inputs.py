"""Coverage, implausible CTs, evaluation refusals, --step, robustness of batches,
OpenKBP import refusals, one-line messages naming the file, and the head-and-neck site check."""

from __future__ import annotations

import csv
import errno
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import cli_error as _cli
from DoseSegLib.analysis.ctcheck import ct_problem
from DoseSegLib.cli.main import main
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.outputs import staged_output
from DoseSegLib.io.patient import read_dose, read_volume, write_volume
from DoseSegLib.io.phantom import make_phantom, write_phantom_patient


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("doseseg: error")]
    assert len(lines) == 1, err
    return lines[0]


def _move(path: Path, shift_mm: float) -> None:
    volume = read_volume(path)
    write_volume(path, Volume(volume.array, volume.spacing, tuple(np.add(volume.origin, (shift_mm, 0, 0))),
                              volume.direction))


# --- 9. coverage: a dose far from the structures is refused everywhere --------------------------------------

def test_run_refuses_a_reference_dose_5_m_away(tiny_models: Path, phantom_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    _move(phantom_dir / "dose.nrrd", 5000.0)
    code, err = _cli(capsys, "run", phantom_dir, "-o", tmp_path / "out", "--no-radiomics", "--no-segment")
    assert code == 1 and "dose.nrrd: the dose grid covers none of the structures" in _one_line(err)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def reference_dir(tmp_path: Path) -> Path:
    """A reference patient in its own split folder (``reference_dir.parent``)."""
    folder = tmp_path / "reference" / "phantom"
    write_phantom_patient(folder)
    return folder


def _prediction_of(reference: Path, folder: Path, shift_mm: float = 0.0, offset_gy: float = 0.0) -> Path:
    (folder / reference.name).mkdir(parents=True)
    dose = read_dose(reference / "dose.nrrd")
    moved = Volume(dose.array + offset_gy, dose.spacing, tuple(np.add(dose.origin, (shift_mm, 0, 0))), dose.direction)
    write_volume(folder / reference.name / "dose.nrrd", moved)
    return folder


def test_evaluate_refuses_a_predicted_dose_5_m_away(reference_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    predictions = _prediction_of(reference_dir, tmp_path / "pred", shift_mm=5000.0)
    code, err = _cli(capsys, "evaluate", predictions, "--reference", reference_dir.parent, "-o", tmp_path / "o")
    assert code == 1 and "pred/phantom/dose.nrrd: the dose grid covers none" in _one_line(err)


def test_evaluate_warns_when_a_dose_covers_part(reference_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                caplog: pytest.LogCaptureFixture) -> None:
    predictions = _prediction_of(reference_dir, tmp_path / "pred", shift_mm=30.0)
    code, err = _cli(capsys, "evaluate", predictions, "--reference", reference_dir.parent, "-o", tmp_path / "o")
    assert code == 0 and "of its voxels lie outside the dose grid" in caplog.text, err


# --- 10. implausible CT values ------------------------------------------------------------------------------

def _spoil_ct(folder: Path, how: str) -> None:
    ct = read_volume(folder / "ct.nrrd")
    spoiled = {"zero": lambda a: np.zeros_like(a), "blank": lambda a: np.full_like(a, -1000),
               "offset": lambda a: (a.astype(np.int32) + 1024).astype(np.uint16)}
    array = spoiled[how](ct.array)
    write_volume(folder / "ct.nrrd", ct.with_array(array))


_CT_PROBLEMS = {"zero": "(no anatomy: every voxel has the same value, 0 HU",
                "blank": "(no anatomy: every voxel has the same value, -1000 HU",
                "offset": "(no negative value: stored with an offset (e.g. +1024"}


@pytest.mark.parametrize("how", ["zero", "blank", "offset"])
def test_model_commands_refuse_an_implausible_ct(how: str, phantom_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Each refusal says what is wrong: a constant CT has no anatomy (not an offset); an offset CT an offset."""
    _spoil_ct(phantom_dir, how)
    for command in ("predict-dose", "segment"):
        code, err = _cli(capsys, command, phantom_dir, "-o", tmp_path / command, "--device", "cpu")
        assert code == 1 and f"ct.nrrd: implausible CT values {_CT_PROBLEMS[how]}" in _one_line(err), err
        assert ("stored with an offset" in _one_line(err)) == (how == "offset"), err
        assert not (tmp_path / command / phantom_dir.name).exists()


@pytest.mark.parametrize("value, dtype", [(0, np.int16), (0.0, np.float32), (-1000, np.int16), (1024, np.uint16)])
def test_a_constant_ct_is_named_as_having_no_anatomy(value: float, dtype: type) -> None:
    """Whatever the constant (0 HU, air, an unsigned 1024), the problem is the missing anatomy."""
    problem = ct_problem(Volume(np.full((8, 7, 6), value, dtype), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    assert problem is not None and problem.startswith(f"no anatomy: every voxel has the same value, {value:g} HU")
    assert "offset" not in problem


def test_an_offset_ct_is_still_named_an_offset_and_a_real_ct_passes() -> None:
    ct = make_phantom(shape=(24, 24, 16)).ct
    assert ct_problem(ct) is None
    shifted = ct.with_array((ct.array.astype(np.int32) + 1024).astype(np.uint16))
    assert (ct_problem(shifted) or "").startswith("no negative value: stored with an offset")


def test_dvh_only_warns_about_an_implausible_ct(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                               caplog: pytest.LogCaptureFixture) -> None:
    _spoil_ct(phantom_dir, "offset")
    code, err = _cli(capsys, "dvh", phantom_dir, "-o", tmp_path / "o")
    assert code == 0 and "implausible CT values" in caplog.text and "offset" in caplog.text, err


def test_run_refuses_an_implausible_ct(tiny_models: Path, phantom_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    _spoil_ct(phantom_dir, "zero")
    code, err = _cli(capsys, "run", phantom_dir, "-o", tmp_path / "o", "--no-radiomics", "--no-segment")
    assert code == 1 and "ct.nrrd: implausible CT values (no anatomy: every voxel has the same value, 0 HU" \
        in _one_line(err), err
    assert "export the patient's CT again" in _one_line(err) and "stored with an offset" not in _one_line(err)


# --- 11. evaluate-seg needs every reference patient; evaluate clips ringing -----------------------------------

def _three_references(tmp_path: Path) -> tuple[Path, Path]:
    reference = tmp_path / "reference"
    for name in ("p1", "p2", "p3"):
        write_phantom_patient(reference / name, shape=(40, 40, 32))
    predictions = tmp_path / "predictions"
    shutil.copytree(reference / "p1" / "structures", predictions / "p1" / "structures")
    return reference, predictions


def test_evaluate_seg_refuses_missing_patients(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference, predictions = _three_references(tmp_path)
    code, err = _cli(capsys, "evaluate-seg", predictions, "--reference", reference, "-o", tmp_path / "o",
                     "--no-rmae")
    assert code == 1 and "no prediction for 2 of 3 reference patients (p2, p3)" in _one_line(err)
    assert "--allow-missing" in err and not (tmp_path / "o").exists()
    code, err = _cli(capsys, "evaluate-seg", predictions, "--reference", reference, "-o", tmp_path / "o",
                     "--no-rmae", "--allow-missing")
    assert code == 0, err
    with (tmp_path / "o" / "per_structure.csv").open() as handle:
        assert {row["patient"] for row in csv.DictReader(handle)} == {"p1"}


@pytest.mark.parametrize("offset, accepted", [(-0.1, True), (-0.99, True), (-1.5, False)])
def test_evaluate_clips_slightly_negative_predictions(offset: float, accepted: bool, reference_dir: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    predictions = _prediction_of(reference_dir, tmp_path / "pred", offset_gy=offset)
    code, err = _cli(capsys, "evaluate", predictions, "--reference", reference_dir.parent, "-o", tmp_path / "o")
    if accepted:
        assert code == 0 and "slightly negative" in caplog.text and "set to 0 Gy" in caplog.text, err
    else:
        assert code == 1 and "dose.nrrd: dose has negative values (min -1.5 Gy)" in _one_line(err)


# --- 12. dvh --step -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", ["nan", "inf", "-inf", "1e-6", "0", "-0.1", "10", "abc"])
def test_dvh_step_is_validated_at_parse_time(step: str, phantom_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["dvh", str(phantom_dir), "-o", str(tmp_path / "o"), f"--step={step}"])
    assert info.value.code == 2 and "0.001 to 5 Gy" in capsys.readouterr().err


def test_dvh_bins_are_bounded(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dose = read_dose(phantom_dir / "dose.nrrd")
    write_volume(phantom_dir / "dose.nrrd", dose.with_array(dose.array * 1000))  # up to ~75,000 "Gy"
    code, err = _cli(capsys, "dvh", phantom_dir, "-o", tmp_path / "o", "--allow-high-dose", "--step", "0.001")
    assert code == 1 and "DVH bins" in _one_line(err) and "larger --step" in err


# --- 13. one-voxel structures and broken patients do not stop the others ------------------------------------

def _add_dot(folder: Path) -> None:
    ct = read_volume(folder / "ct.nrrd")
    dot = np.zeros(ct.shape, np.uint8)
    dot[tuple(s // 2 for s in ct.shape)] = 1
    write_volume(folder / "structures" / "Dot.nrrd", ct.with_array(dot))


def test_radiomics_skips_a_one_voxel_structure_with_a_warning(phantom_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("radiomics")
    _add_dot(phantom_dir)
    code, err = _cli(capsys, "radiomics", phantom_dir, "-o", tmp_path / "o")
    assert code == 0, err
    with (tmp_path / "o" / "radiomics.csv").open() as handle:
        rows = {row["structure"]: row for row in csv.DictReader(handle)}
    assert "single voxel" in rows["Dot"]["warning"] and rows["Brainstem"]["original_firstorder_Mean"]


def test_run_with_a_one_voxel_structure(tiny_models: Path, phantom_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    _add_dot(phantom_dir)
    code, err = _cli(capsys, "run", phantom_dir, "-o", tmp_path / "o", "--no-segment")
    assert code == 0, err
    assert "Dot" in (tmp_path / "o" / "radiomics.csv").read_text()


def test_features_batch_finishes_the_good_patients(phantom_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(phantom_dir, broken)
    (broken / "ct.nrrd").write_bytes(b"NRRD0004\ntruncated")
    code, err = _cli(capsys, "features", phantom_dir, broken, "-o", tmp_path / "o", "--device", "cpu")
    assert code == 1 and "broken/ct.nrrd" in _one_line(err)
    with (tmp_path / "o" / "features.csv").open() as handle:
        assert [row["patient"] for row in csv.DictReader(handle)] == ["phantom"]


# --- 14. import-openkbp refusals --------------------------------------------------------------------------------

def test_import_openkbp_refuses_zero_voxel_sizes(csv_patient: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    np.savetxt(csv_patient / "voxel_dimensions.csv", [0.0, 0.0, 0.0])
    code, err = _cli(capsys, "import-openkbp", csv_patient, "-o", tmp_path / "o")
    assert code == 1 and "voxel_dimensions.csv: expected three positive voxel sizes" in _one_line(err)
    assert not (tmp_path / "o").exists()


def test_import_openkbp_refuses_two_files_for_one_structure(csv_patient: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    shutil.copy(csv_patient / "Parotid_L.csv", csv_patient / "LeftParotid.csv")
    code, err = _cli(capsys, "import-openkbp", csv_patient, "-o", tmp_path / "o")
    assert code == 1 and "'Parotid_L' and 'LeftParotid' both map to structure 'LeftParotid'" in _one_line(err)


# --- 15. one line naming the file and the fix -------------------------------------------------------------------

def test_evaluate_seg_unknown_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference, predictions = _three_references(tmp_path)
    code, err = _cli(capsys, "evaluate-seg", predictions, "--reference", reference, "-o", tmp_path / "o",
                     "--no-rmae", "--allow-missing", "--labels", "Foo,Bar")
    assert code == 1 and "none of the labels Foo, Bar" in _one_line(err) and "--labels" in err


def test_weights_that_are_not_weights(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    code, err = _cli(capsys, "predict-dose", phantom_dir, "-o", tmp_path / "o", "--weights", notes)
    line = _one_line(err)
    assert code == 1 and "notes.pt: not a DoseSeg dose weights file" in line and "train-dose" in line
    assert "weights_only" not in err


def test_radiomics_dose_bin_width_zero(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["radiomics", str(phantom_dir), "-o", str(tmp_path / "o"), "--dose-bin-width", "0"])
    assert info.value.code == 2 and "--dose-bin-width" in capsys.readouterr().err


def test_a_full_disk_names_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DoseSegError, match=rf"{out}/dose.nrrd: cannot write the output \(No space left"):
        with staged_output(out, False, []) as staging:
            raise OSError(errno.ENOSPC, "No space left on device", str(staging / "dose.nrrd"))
    assert list(tmp_path.iterdir()) == []


def test_dvh_with_a_plain_nrrd_as_segmentation(phantom_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    code, err = _cli(capsys, "dvh", phantom_dir, "-o", tmp_path / "o", "--segmentation", phantom_dir / "ct.nrrd")
    assert code == 1 and "ct.nrrd: no segment in this file: not a Slicer segmentation" in _one_line(err)


def test_radiomics_without_structures(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.rmtree(phantom_dir / "structures")
    code, err = _cli(capsys, "radiomics", phantom_dir, "-o", tmp_path / "o")
    assert code == 1 and "structures: no structure to describe" in _one_line(err)
    assert not (tmp_path / "o").exists()


# --- 16. site ---------------------------------------------------------------------------------------------------

def _pelvis(folder: Path) -> None:
    structures = folder / "structures"
    for old, new in (("Brainstem", "Bladder"), ("SpinalCord", "Rectum"), ("Esophagus", "Femur_Head_L")):
        (structures / f"{old}.nrrd").rename(structures / f"{new}.nrrd")
    for name in ("RightParotid", "LeftParotid", "Larynx", "Mandible"):
        (structures / f"{name}.nrrd").unlink()


def test_model_commands_refuse_another_site_unless_overridden(phantom_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    _pelvis(phantom_dir)
    code, err = _cli(capsys, "predict-dose", phantom_dir, "-o", tmp_path / "o", "--device", "cpu")
    line = _one_line(err)
    assert code == 1 and "no head-and-neck organ among its structures (Bladder" in line and "--any-site" in line
    code, err = _cli(capsys, "predict-dose", phantom_dir, "-o", tmp_path / "o2", "--device", "cpu", "--any-site")
    assert code == 0, err
    assert "site check overridden (--any-site)" in (tmp_path / "o2" / "phantom" / "notes.txt").read_text()
    assert _cli(capsys, "dvh", phantom_dir, "-o", tmp_path / "dvh")[0] == 0  # DVH works for any site
    code, err = _cli(capsys, "features", phantom_dir, "-o", tmp_path / "f", "--device", "cpu")
    assert code == 1 and "--any-site" in _one_line(err)
    assert _cli(capsys, "features", phantom_dir, "-o", tmp_path / "f", "--device", "cpu", "--any-site")[0] == 0
    assert "site check overridden" in (tmp_path / "f" / "features.csv").read_text()
