"""The ``doseseg evaluate``, ``doseseg dvh`` and ``doseseg radiomics`` commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from openkbp_reference import challenge_metrics, on_ct_grid

from DoseSegLib.cli.main import main
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_volume, write_volume
from DoseSegLib.io.tables import read_csv

SHAPE = (32, 28, 24)
SPACING = (3.0, 3.0, 2.5)
ORIGIN = tuple(-s * (n - 1) / 2 for s, n in zip(SPACING, SHAPE))
BOXES = {
    "PTV70": ((10, 8, 8), (20, 18, 16)),
    "PTV56": ((6, 8, 8), (10, 18, 16)),
    "Brainstem": ((22, 10, 10), (27, 16, 14)),
    "SpinalCord": ((12, 20, 0), (16, 26, 20)),
}
DOSE_BOX = ((4, 4, 2), (28, 24, 22))  # the possible-dose mask; the dose is stored cropped to it


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


def box(lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return mask


def synthetic_dose(seed: int) -> np.ndarray:
    """A smooth dose peaking on PTV70, zero outside the possible-dose mask (Gy, CT grid)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.indices(SHAPE)
    dose = 72 * np.exp(-((i - 15) ** 2 / 120 + (j - 13) ** 2 / 80 + (k - 12) ** 2 / 90)) + rng.uniform(0, 2, SHAPE)
    return np.where(box(*DOSE_BOX), dose, 0).astype(np.float32)


def cropped(array: np.ndarray, lo: tuple[int, ...], hi: tuple[int, ...]) -> Volume:
    """``array[lo:hi]`` as a volume with its own origin, like the OpenKBP files."""
    origin = tuple(o + s * a for o, s, a in zip(ORIGIN, SPACING, lo))
    return Volume(array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy(), SPACING, origin)


def write_synthetic_patient(folder: Path, seed: int) -> None:
    """ct, possible-dose mask, cropped dose and cropped structures (an OpenKBP-like folder)."""
    (folder / "structures").mkdir(parents=True)
    ct = np.random.default_rng(seed).normal(0, 30, SHAPE).astype(np.int16)
    write_volume(folder / "ct.nrrd", Volume(ct, SPACING, ORIGIN))
    write_volume(folder / "possible_dose_mask.nrrd", Volume(box(*DOSE_BOX).astype(np.uint8), SPACING, ORIGIN))
    write_volume(folder / "dose.nrrd", cropped(synthetic_dose(seed), *DOSE_BOX))
    for name, (lo, hi) in BOXES.items():
        write_volume(folder / "structures" / f"{name}.nrrd", cropped(box(lo, hi).astype(np.uint8), lo, hi))


@pytest.fixture
def synthetic_split(tmp_path: Path) -> Path:
    split = tmp_path / "reference"
    for seed, name in enumerate(("case_2", "case_10", "case_7")):
        write_synthetic_patient(split / name, seed)
    return split


def expected_scores(pairs: list[tuple[np.ndarray, np.ndarray, dict, np.ndarray]], voxel_mm3: list[float]) -> tuple:
    """Dose and DVH scores with plain numpy: (pred, ref, structures, mask) per patient."""
    dose_errors, dvh_errors = [], []
    for (pred, ref, structures, mask), mm3 in zip(pairs, voxel_mm3):
        dose_errors.append(np.abs(pred - ref).sum() / mask.sum())
        ref_m, pred_m = challenge_metrics(ref, structures, mm3), challenge_metrics(pred, structures, mm3)
        dvh_errors += [abs(pred_m[key] - value) for key, value in ref_m.items()]
    return np.mean(dose_errors), np.mean(dvh_errors)


def test_evaluate_reference_against_itself_scores_zero(
    synthetic_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = run_cli(capsys, "evaluate", synthetic_split, "--reference", synthetic_split, "-o", tmp_path / "o")
    assert code == 0, err
    assert last_line(out) == "dose_score 0.0000 dvh_score 0.0000 n 3"
    per_patient = read_csv(tmp_path / "o" / "per_patient.csv", ["patient", "dose_error", "dvh_error"])
    assert [r["patient"] for r in per_patient] == ["case_2", "case_7", "case_10"]
    errors = read_csv(tmp_path / "o" / "dvh_errors.csv",
                      ["patient", "structure", "metric", "reference", "predicted", "abs_error"])
    assert len(errors) == 3 * (3 + 3 + 2 + 2)
    assert {float(r["abs_error"]) for r in errors} == {0.0}


def test_evaluate_perturbed_synthetic_doses(
    synthetic_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pred_dir = tmp_path / "pred"
    rng = np.random.default_rng(5)
    pairs = []
    structures = {name: box(lo, hi) for name, (lo, hi) in BOXES.items()}
    for seed, name in enumerate(("case_2", "case_10", "case_7")):
        ref = synthetic_dose(seed).astype(np.float64)
        pred = (ref * 1.05 + rng.uniform(0, 1, SHAPE)).astype(np.float32)
        (pred_dir / name).mkdir(parents=True)
        if seed == 0:  # on its own cropped grid: the command resamples it onto the CT grid
            crop = (2, 2, 2), (30, 26, 22)
            write_volume(pred_dir / name / "dose.nrrd", cropped(pred, *crop))
            pred = np.where(box(*crop), pred, 0)
        else:
            write_volume(pred_dir / name / "dose.nrrd", Volume(pred, SPACING, ORIGIN))
        pairs.append((pred.astype(np.float64), ref, structures, box(*DOSE_BOX)))
    dose_score, dvh_score = expected_scores(pairs, [float(np.prod(SPACING))] * 3)
    code, out, err = run_cli(capsys, "evaluate", pred_dir, "--reference", synthetic_split, "-o", tmp_path / "o")
    assert code == 0, err
    assert last_line(out) == f"dose_score {dose_score:.4f} dvh_score {dvh_score:.4f} n 3"


def test_evaluate_missing_predictions(synthetic_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred_dir = tmp_path / "pred"
    (pred_dir / "case_7").mkdir(parents=True)
    (pred_dir / "case_7" / "dose.nrrd").symlink_to(synthetic_split / "case_7" / "dose.nrrd")
    code, out, err = run_cli(capsys, "evaluate", pred_dir, "--reference", synthetic_split, "-o", tmp_path / "o")
    assert code == 1 and "case_2, case_10" in err and "--allow-missing" in err
    assert not (tmp_path / "o").exists()
    code, out, err = run_cli(capsys, "evaluate", pred_dir, "--reference", synthetic_split, "-o", tmp_path / "o",
                             "--allow-missing")
    assert code == 0, err
    assert last_line(out) == "dose_score 0.0000 dvh_score 0.0000 n 1"


def test_evaluate_refuses_a_dose_in_cgy(synthetic_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred_dir = tmp_path / "pred"
    for name in ("case_2", "case_10", "case_7"):
        dose = read_volume(synthetic_split / name / "dose.nrrd")
        (pred_dir / name).mkdir(parents=True)
        write_volume(pred_dir / name / "dose.nrrd", dose.with_array(dose.array * 100))
    code, out, err = run_cli(capsys, "evaluate", pred_dir, "--reference", synthetic_split, "-o", tmp_path / "o")
    assert code == 1 and "cGy" in err and "case_2" in err


def real_patients(shared_data: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    split = shared_data / "openkbp" / "validation"
    names = ["pt_201", "pt_203", "pt_208"]
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in names:
        os.symlink(split / name, reference / name)
    return reference, names


def test_evaluate_real_reference_against_itself(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reference, names = real_patients(shared_data, tmp_path)
    pred_dir = tmp_path / "pred"
    for name in names:
        (pred_dir / name).mkdir(parents=True)
        (pred_dir / name / "dose.nrrd").symlink_to(reference / name / "dose.nrrd")
    code, out, err = run_cli(capsys, "evaluate", pred_dir, "--reference", reference, "-o", tmp_path / "o")
    assert code == 0, err
    assert last_line(out) == "dose_score 0.0000 dvh_score 0.0000 n 3"


def test_evaluate_real_perturbed_doses(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """dose * 1.05 + noise, written on the CT grid (or on the reference's cropped grid for the first)."""
    reference, names = real_patients(shared_data, tmp_path)
    pred_dir = tmp_path / "pred"
    rng = np.random.default_rng(0)
    pairs, voxels = [], []
    for n, name in enumerate(names):
        folder = reference / name
        ct = read_volume(folder / "ct.nrrd")
        spacing, origin = np.asarray(ct.spacing), np.asarray(ct.origin)
        ref = on_ct_grid(folder / "dose.nrrd", origin, spacing)
        mask = on_ct_grid(folder / "possible_dose_mask.nrrd", origin, spacing) > 0
        structures = {p.stem: on_ct_grid(p, origin, spacing) > 0 for p in (folder / "structures").glob("*.nrrd")}
        pred = (ref * 1.05 + rng.normal(0, 0.5, ref.shape).clip(0, None) * mask).astype(np.float32)
        (pred_dir / name).mkdir(parents=True)
        if n == 0:  # cropped like the reference (pred is 0 outside the possible-dose mask's box)
            own = read_volume(folder / "dose.nrrd")
            lo = np.round((np.asarray(own.origin) - origin) / spacing).astype(int)
            write_volume(pred_dir / name / "dose.nrrd",
                         own.with_array(pred[tuple(slice(a, a + s) for a, s in zip(lo, own.shape))]))
        else:
            write_volume(pred_dir / name / "dose.nrrd", ct.with_array(pred))
        pairs.append((pred.astype(np.float64), ref, structures, mask))
        voxels.append(float(np.prod(spacing)))
    dose_score, dvh_score = expected_scores(pairs, voxels)
    code, out, err = run_cli(capsys, "evaluate", pred_dir, "--reference", reference, "-o", tmp_path / "o")
    assert code == 0, err
    assert last_line(out) == f"dose_score {dose_score:.4f} dvh_score {dvh_score:.4f} n 3"
    per_patient = read_csv(tmp_path / "o" / "per_patient.csv")
    expected_first = np.abs(pairs[0][0] - pairs[0][1]).sum() / pairs[0][3].sum()
    assert float(per_patient[0]["dose_error"]) == pytest.approx(expected_first, rel=1e-6)


def test_dvh_command(
    synthetic_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    patient = synthetic_split / "case_2"
    code, out, err = run_cli(capsys, "dvh", patient, "-o", tmp_path / "o", "--step", "0.5", "--vx", "20,40")
    assert code == 0, err
    assert "'SpinalCord'" in caplog.text and "outside the dose grid" in caplog.text  # beyond the cropped dose
    dvh = read_csv(tmp_path / "o" / "dvh.csv", ["structure", "dose_gy", "volume_cc", "volume_pct"])
    assert {r["structure"] for r in dvh} == set(BOXES)
    steps = {round(float(b["dose_gy"]) - float(a["dose_gy"]), 6) for a, b in zip(dvh, dvh[1:])
             if a["structure"] == b["structure"]}
    assert steps == {0.5}
    metrics = read_csv(tmp_path / "o" / "dvh_metrics.csv")
    columns = ["structure", "original_name", "Volume[cc]", "Mean[Gy]", "Min[Gy]", "Max[Gy]", "D99%[Gy]", "D98%[Gy]",
               "D95%[Gy]", "D50%[Gy]", "D2%[Gy]", "D1%[Gy]", "D2cc[Gy]", "D0.1cc[Gy]", "D0.03cc[Gy]", "V20Gy[%]",
               "V20Gy[cc]", "V40Gy[%]", "V40Gy[cc]", "prescription_gy", "HI", "CI", "dvh_method", "note"]
    assert list(metrics[0]) == columns
    ptv = next(r for r in metrics if r["structure"] == "PTV70")
    assert ptv["original_name"] in {p.name[:-5] for p in (patient / "structures").glob("*.nrrd")}
    assert float(ptv["prescription_gy"]) == 70 and ptv["HI"] and ptv["CI"]
    dose = synthetic_dose(0)[box(*BOXES["PTV70"])].astype(np.float64)
    assert float(ptv["D95%[Gy]"]) == pytest.approx(np.percentile(dose, 5), rel=1e-6)
    checks = read_csv(tmp_path / "o" / "constraints.csv", ["structure", "metric", "result"])
    results = {(r["structure"], r["metric"]): r["result"] for r in checks}
    assert results[("RightParotid", "Mean[Gy]")] == "not evaluated"
    assert results[("PTV70", "D95%[Gy]")] in ("pass", "fail") and ("PTV56", "D95%[Gy]") in results


def test_dvh_command_with_another_dose(synthetic_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    patient = tmp_path / "patient"
    write_synthetic_patient(patient, 0)
    (patient / "dose.nrrd").unlink()
    code, out, err = run_cli(capsys, "dvh", patient, "-o", tmp_path / "o")
    assert code == 1 and "no dose" in err
    other = synthetic_split / "case_10" / "dose.nrrd"
    code, out, err = run_cli(capsys, "dvh", patient, "--dose", other, "-o", tmp_path / "o")
    assert code == 0, err
    cgy = tmp_path / "cgy.nrrd"
    dose = read_volume(other)
    write_volume(cgy, dose.with_array(dose.array * 100))
    code, out, err = run_cli(capsys, "dvh", patient, "--dose", cgy, "-o", tmp_path / "o2")
    assert code == 1 and "cGy" in err and "--allow-high-dose" in err
    code, out, err = run_cli(capsys, "dvh", patient, "--dose", cgy, "-o", tmp_path / "o2", "--allow-high-dose")
    assert code == 0, err


def radiomics_version() -> str:
    import radiomics

    return radiomics.__version__


def test_radiomics_command(synthetic_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("radiomics")
    patient = synthetic_split / "case_2"
    code, out, err = run_cli(capsys, "radiomics", patient, "-o", tmp_path / "o", "--classes", "firstorder", "--dose")
    assert code == 0, err
    rows = read_csv(tmp_path / "o" / "radiomics.csv")
    assert [r["structure"] for r in rows] == ["Brainstem", "PTV56", "PTV70", "SpinalCord"]
    assert "original_firstorder_Mean" in rows[0] and "dose_original_firstorder_Mean" in rows[0]
    assert not any(c.startswith(("diagnostics_", "original_shape")) for c in rows[0])
    # pyradiomics' version, settings and diagnostics kept beside the table, as its own command line does
    provenance = json.loads((tmp_path / "o" / "radiomics.json").read_text())
    assert provenance["ct"]["pyradiomics_version"] == radiomics_version()
    assert provenance["ct"]["enabled_features"] == {"firstorder": []}
    assert provenance["dose"]["settings"]["binWidth"] == 1.0
    brainstem = provenance["structures"]["Brainstem"]
    assert brainstem["Versions_PyRadiomics"] == radiomics_version() and brainstem["Mask-original_VoxelNum"] > 0
    code, out, err = run_cli(capsys, "radiomics", patient, "-o", tmp_path / "o2", "--classes", "firstorder,nope")
    assert code == 1 and "nope" in err


def test_radiomics_command_with_a_parameter_file(synthetic_split: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("radiomics")
    params = tmp_path / "params.yaml"
    params.write_text("setting:\n  binWidth: 10\nfeatureClass:\n  firstorder: [Mean, Entropy]\n")
    code, out, err = run_cli(capsys, "radiomics", synthetic_split / "case_2", "-o", tmp_path / "o", "--params", params)
    assert code == 0, err
    rows = read_csv(tmp_path / "o" / "radiomics.csv")
    assert set(rows[0]) == {"structure", "original_firstorder_Mean", "original_firstorder_Entropy"}
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.csv").write_text("keep")
    code, out, err = run_cli(capsys, "radiomics", synthetic_split / "case_2", "-o", tmp_path / "taken")
    assert code == 1 and "taken" in err and (tmp_path / "taken" / "old.csv").read_text() == "keep"
