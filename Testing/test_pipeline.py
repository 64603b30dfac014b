"""``doseseg run`` and the Pipeline API: real-patient comparison, batch mode, refused and interrupted outputs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nrrd
import numpy as np
import pytest
from cli_helpers import run_cli
from model_helpers import fake_segmentation

from DoseSegLib.core.alignment import align_case, resample
from DoseSegLib.core.case import OARS
from DoseSegLib.io.outputs import MARKER
from DoseSegLib.io.patient import read_patient, read_volume
from DoseSegLib.io.phantom import write_phantom_patient
from DoseSegLib.io.tables import read_csv
from DoseSegLib.models.common.catalogue import sha256_of
from DoseSegLib.run.pipeline import Pipeline, RunOptions

TreeHash = Callable[[Path], dict[str, str]]


def _leftovers(parent: Path) -> list[str]:
    """Staging folders left behind in ``parent``."""
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_real_patient_is_compared_with_its_reference(
    shared_data: Path, tiny_models: Path, tmp_path: Path, tree_hash: TreeHash
) -> None:
    patient = shared_data / "openkbp" / "validation" / "pt_201"
    before = tree_hash(patient)
    out = tmp_path / "pt_201"
    result = Pipeline(device="cpu", options=RunOptions(radiomics=False)).run(patient, out)
    assert tree_hash(patient) == before

    reference = align_case(read_patient(patient))
    written = read_volume(out / "dose.nrrd")
    assert written.array.size < reference.ct.array.size, "the dose file is cropped to its non-zero box"
    dose = resample(written, reference.ct)  # exact: the crop keeps the CT's voxel positions
    np.testing.assert_array_equal(dose.array, result.dose.array)
    np.testing.assert_allclose(resample(read_volume(out / "dose_difference.nrrd"), reference.ct).array,
                               dose.array - reference.dose.array, atol=1e-5)
    expected_error = np.abs(dose.array - reference.dose.array).sum() / reference.possible_dose_mask.array.sum()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comparison"]["dose_error_gy"] == pytest.approx(expected_error, rel=1e-5)
    comparison = result.comparison
    assert comparison.dose_error == pytest.approx(expected_error, rel=1e-5)
    # OpenKBP DVH metrics: D0.1cc and mean of the OARs, D99/D95/D1 of the 3 PTVs of pt_201; SpinalCord reaches
    # past the dose's box (cropped to the possible-dose mask: 92.6 % inside), so it is left out as not covered
    assert comparison.not_covered == ["SpinalCord"] and summary["comparison"]["not_covered"] == ["SpinalCord"]
    assert len(comparison.openkbp_rows) == 6 * 2 + 3 * 3
    assert comparison.dvh_error == pytest.approx(np.mean([r["abs_error"] for r in comparison.openkbp_rows]))
    rows = read_csv(out / "comparison.csv", ("structure", "metric", "reference", "predicted", "difference"))
    assert {r["structure"] for r in rows} == set(reference.structures) - {"SpinalCord"}
    for row in rows:
        assert float(row["difference"]) == pytest.approx(float(row["predicted"]) - float(row["reference"]), abs=1e-4)
    stem = next(r for r in rows if r["structure"] == "Brainstem" and r["metric"] == "Mean[Gy]")
    assert float(stem["reference"]) == pytest.approx(reference.dose.array[reference.structures["Brainstem"].array]
                                                     .mean(), rel=1e-6)
    for name in ("dose.nrrd", "dose_difference.nrrd"):
        assert nrrd.read_header(str(out / name))["DoseUnits"] == "GY"
    gamma = read_csv(out / "gamma.csv", ("criterion", "pass_rate_pct", "evaluated_cc", "points_evaluated"))
    assert [r["criterion"] for r in gamma] == ["3%/3mm", "2%/2mm"]
    rates = summary["comparison"]["gamma_pass_rate_pct"]
    assert 0 <= rates["2%/2mm"] <= rates["3%/3mm"] <= 100
    assert rates["3%/3mm"] == pytest.approx(float(gamma[0]["pass_rate_pct"]), rel=1e-6)
    assert float(gamma[0]["evaluated_cc"]) <= reference.possible_dose_mask.array.sum() * reference.ct.voxel_volume_cc
    assert "radiomics skipped (--no-radiomics)" in summary["notes"]
    assert not (out / "radiomics.csv").exists()
    assert summary["models"]["dose"]["sha256"] == sha256_of(tiny_models / "tiny_dose.pt")


def test_batch_goes_on_after_a_bad_patient(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good_a, good_b = tmp_path / "in" / "a", tmp_path / "in" / "b"
    write_phantom_patient(good_a, shape=(40, 40, 32), seed=1)
    write_phantom_patient(good_b, shape=(40, 40, 32), seed=2)
    bad = tmp_path / "in" / "bad"
    shutil.copytree(good_a, bad)
    (bad / "ct.nrrd").write_bytes((bad / "ct.nrrd").read_bytes()[:300])  # truncated
    out = tmp_path / "out"

    code, stdout, stderr = run_cli(capsys, "run", good_a, bad, good_b, "-o", out, "--no-radiomics", "--device", "cpu")
    assert code == 1
    assert f"{bad}" in stderr and "ct.nrrd" in stderr
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a", "b", "cohort_summary.csv"]
    for name in ("a", "b"):
        assert (out / name / "report.html").is_file() and (out / name / "dose.nrrd").is_file()
    cohort = {r["patient"]: r for r in read_csv(out / "cohort_summary.csv", ("patient", "status", "error"))}
    assert [cohort[n]["status"] for n in ("a", "bad", "b")] == ["ok", "failed", "ok"]
    assert "ct.nrrd" in cohort["bad"]["error"] and float(cohort["a"]["dose_error_gy"]) >= 0
    assert "failed: bad" in stdout
    assert _leftovers(tmp_path) == []


def test_existing_output_is_refused_without_force(
    tiny_models: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    code, _, stderr = run_cli(capsys, "run", phantom_dir, "-o", out, "--no-radiomics")
    assert code == 1
    assert stderr.startswith("doseseg: error:") and "--force" in stderr and stderr.count("\n") == 1
    assert (out / "old.txt").read_text() == "keep me"

    code, _, stderr = run_cli(capsys, "run", phantom_dir, "-o", out, "--no-radiomics", "--force")
    assert code == 1 and "did not write: old.txt" in stderr  # --force replaces only DoseSeg results
    (out / "old.txt").unlink()
    assert run_cli(capsys, "run", phantom_dir, "-o", out, "--no-radiomics")[0] == 0
    code, stdout, _ = run_cli(capsys, "run", phantom_dir, "-o", out, "--no-radiomics", "--force", "--json")
    assert code == 0
    assert json.loads(stdout)["patient"] == phantom_dir.name
    assert _leftovers(tmp_path) == []


def test_patient_without_reference_dose_gets_no_comparison(tiny_models: Path, tmp_path: Path) -> None:
    patient = tmp_path / "patient"
    write_phantom_patient(patient, shape=(40, 40, 32))
    (patient / "dose.nrrd").unlink()
    result = Pipeline(device="cpu", options=RunOptions(radiomics=False)).run(patient, tmp_path / "out")
    assert result.comparison is None
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "dose.nrrd", "segmentation.seg.nrrd", "dvh.csv", "dvh_metrics.csv", "constraints.csv", "summary.json",
        "report.html", MARKER,
    }
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["comparison"] is None


def test_bad_patient_fails_with_one_line_and_no_output(
    tiny_models: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash
) -> None:
    for target in phantom_dir.glob("structures/PTV*.nrrd"):
        target.unlink()
    before = tree_hash(phantom_dir)
    out = tmp_path / "out"
    code, _, stderr = run_cli(capsys, "run", phantom_dir, "-o", out)
    assert code == 1
    assert "no target" in stderr and stderr.count("\n") == 1
    assert not out.exists() and _leftovers(tmp_path) == []
    assert tree_hash(phantom_dir) == before


def test_ctrl_c_leaves_nothing_half_written(
    tiny_models: Path, phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from DoseSegLib.io import patient as io

    def interrupted(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "write_segmentation", interrupted)
    out = tmp_path / "out"
    code, _, stderr = run_cli(capsys, "run", phantom_dir, "-o", out, "--no-radiomics")
    assert code == 130 and "interrupted" in stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_missing_oars_are_auto_segmented_when_a_model_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_segmentation(monkeypatch, tmp_path)
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    patient = tmp_path / "patient"
    write_phantom_patient(patient, shape=(40, 40, 32))
    for name in ("Larynx", "LeftParotid"):
        (patient / "structures" / f"{name}.nrrd").unlink()
    result = Pipeline(device="cpu", options=RunOptions(radiomics=False)).analyse(patient)
    assert sorted(result.auto_segmented) == ["Larynx", "LeftParotid"]
    assert result.structure_sources["SpinalCord"] == "patient"
    assert {m["structure"] for m in result.metrics} >= {"Larynx", "LeftParotid"}
    assert result.models["segmentation"]["name"] == "fake-seg"
    assert "auto-segmented: LeftParotid, Larynx" in result.notes  # in OARS order

    every = Pipeline(device="cpu", options=RunOptions(radiomics=False, segment_all=True)).analyse(patient)
    assert sorted(every.auto_segmented) == sorted(OARS)


def test_a_clinic_model_gets_only_its_own_organs_auto_segmented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dose model of another site (organs Larynx and Mandible) with the head-and-neck segmentation model:
    only its own missing organ is contoured (never a parotid it does not use), and an organ the
    segmentation model cannot contour is named in the warnings, not invented."""
    import json

    import torch

    from DoseSegLib.models.common.training_loop import save_weights
    from DoseSegLib.models.dose.net import DoseNet
    from model_helpers import TINY_PATCH, catalogueEntry, tiny_dose_config

    fake_segmentation(monkeypatch, tmp_path)
    models = tmp_path / "models"
    torch.manual_seed(0)
    for name, organs in (("larynx-dose", ["Larynx", "Mandible"]), ("pelvis-dose", ["Bladder", "Rectum"])):
        save_weights(models / f"{name}.pt", DoseNet(tiny_dose_config(in_channels=3 + len(organs) + 1)),
                     {"patch": TINY_PATCH, "oars": organs, "site": name})
    catalogue = json.loads((models / "catalogue.json").read_text())
    catalogue["models"] += [catalogueEntry(models, n, f"{n}.pt") for n in ("larynx-dose", "pelvis-dose")]
    (models / "catalogue.json").write_text(json.dumps(catalogue))
    monkeypatch.setenv("DOSESEG_MODELS", str(models))
    patient = tmp_path / "patient"
    write_phantom_patient(patient, shape=(40, 40, 32))
    for name in ("Larynx", "LeftParotid"):
        (patient / "structures" / f"{name}.nrrd").unlink()
    options = RunOptions(radiomics=False, any_site=True)
    result = Pipeline(device="cpu", options=options, dose_model="larynx-dose").analyse(patient)
    assert result.auto_segmented == ["Larynx"] and "LeftParotid" not in result.case.structures
    pelvis = Pipeline(device="cpu", options=options, dose_model="pelvis-dose").analyse(patient)
    assert pelvis.auto_segmented == [] and "Larynx" not in pelvis.case.structures
    assert any("does not contour Bladder, Rectum" in w for w in pelvis.warnings)


def test_without_a_segmentation_model_missing_oars_are_noted(tiny_models: Path, tmp_path: Path) -> None:
    patient = tmp_path / "patient"
    write_phantom_patient(patient, shape=(40, 40, 32))
    (patient / "structures" / "Larynx.nrrd").unlink()
    result = Pipeline(device="cpu", options=RunOptions(radiomics=False)).analyse(patient)
    assert result.auto_segmented == [] and "segmentation" not in result.models
    assert any("no segmentation model" in note and "Larynx" in note for note in result.notes)
    assert "Larynx" not in result.case.structures
