"""``run``, ``predict-dose``, ``evaluate`` and the what-if session agree on one patient (issue #29).

- ``run`` and ``predict-dose`` judge, normalise and check a prediction by one code path
  (``TrustChecks.checked``): they refuse the same cases with the same message and normalise the
  others by the same factor;
- ``run``'s comparison and ``evaluate`` give the same DVH error per structure, vendor names and
  targets with a given prescription included.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from model_helpers import predict_the_reference, write_tiny_convention

from DoseSegLib.cli.main import main

# The phantom's plan gives PTV70 70 Gy while the plan's prescription says 50 Gy: normalising to it takes a factor
# 0.71 (plausible), after which the dose is a plausible 50 Gy plan; the network's own 70 Gy is above 1.3 x 50 Gy.
# At 40 Gy the factor (0.57) is outside the plausible range: the dose cannot be normalised and is refused.
PRESCRIBED_50 = ["--prescription", "PTV70=50", "--prescription", "PTV56=40"]
PRESCRIBED_40 = ["--prescription", "PTV70=40", "--prescription", "PTV56=30"]


def _refusal(err: str) -> str:
    found = re.search(r"patient 'phantom': predicted maximum .*", err)
    assert found, err
    return found.group(0)


def _both(phantom_dir: Path, out: Path, flags: list[str]) -> tuple[int, int]:
    """Exit codes of predict-dose and run (no segmentation, no radiomics) on the phantom with ``flags``."""
    flags = [*flags, "--device", "cpu"]
    predicted = main(["predict-dose", str(phantom_dir), "-o", str(out / "pred"), *flags])
    run = main(["run", str(phantom_dir), "-o", str(out / "run"), "--no-segment", "--no-radiomics", *flags])
    return predicted, run


@pytest.mark.parametrize("flags", [PRESCRIBED_40, [*PRESCRIBED_50, "--no-normalise"]], ids=["40Gy", "50Gy-raw"])
def test_run_and_predict_dose_refuse_the_same_case_with_the_same_message(
    flags: list[str], tiny_models: Path, phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    write_tiny_convention(tiny_models, "mean", 1.0)
    predict_the_reference(monkeypatch)
    capsys.readouterr()
    flags = [*flags, "--device", "cpu"]
    assert main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / "pred"), *flags]) == 1
    predicted = _refusal(capsys.readouterr().err)
    assert main(["run", str(phantom_dir), "-o", str(tmp_path / "run"), "--no-segment", "--no-radiomics",
                 *flags]) == 1
    run = _refusal(capsys.readouterr().err)
    assert run == predicted and "predicted maximum 70.0 Gy is above 1.3 x the highest prescription (PTV70:" in run
    for out in ("pred", "run"):
        assert not (tmp_path / out).exists() or not any((tmp_path / out).iterdir())


def test_run_and_predict_dose_normalise_the_same_case_alike(
    tiny_models: Path, phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A prediction 1.4 x the prescription, normalisable (factor 0.71): both normalise it by the same factor and
    write the same dose (on the old code predict-dose refused it and run normalised it)."""
    import json

    from DoseSegLib.io.patient import read_dose

    write_tiny_convention(tiny_models, "mean", 1.0)
    predict_the_reference(monkeypatch)
    assert _both(phantom_dir, tmp_path, PRESCRIBED_50) == (0, 0)
    notes = (tmp_path / "pred" / "phantom" / "notes.txt").read_text()
    assert "normalised: PTV70 mean 70.00 -> 50.00 Gy = 1 x the 50 Gy prescription" in notes and "factor 0.714" in notes
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["normalisation"]["factor"] == pytest.approx(50 / 70, abs=1e-4)
    written = read_dose(tmp_path / "pred" / "phantom" / "dose.nrrd")
    ran = read_dose(tmp_path / "run" / "dose.nrrd")  # cropped to its non-zero box
    assert float(written.array.max()) == pytest.approx(50.0, abs=1e-3) == float(ran.array.max())
    assert float(written.array.sum()) == pytest.approx(float(ran.array.sum()), rel=1e-6)


def test_the_same_case_with_its_right_prescription_is_normalised_by_both(
    tiny_models: Path, phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: a plausible prediction passes both and is normalised by the same factor."""
    import json

    write_tiny_convention(tiny_models, "mean", 1.02)
    predict_the_reference(monkeypatch)
    flags = ["--device", "cpu"]
    assert main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / "pred"), *flags]) == 0
    notes = (tmp_path / "pred" / "phantom" / "notes.txt").read_text()
    assert "normalised: PTV70 mean 70.00 -> 71.40 Gy = 1.02 x the 70 Gy prescription" in notes
    assert "factor 1.020" in notes
    assert main(["run", str(phantom_dir), "-o", str(tmp_path / "run"), "--no-segment", "--no-radiomics",
                 *flags]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["normalisation"]["factor"] == pytest.approx(1.02, abs=1e-4)


VENDOR_NAMES = {"Brainstem": "BRSTEM", "LeftParotid": "Parotid_L", "PTV70": "PTV1", "SpinalCord": "Cord"}


def _vendor_patient(folder: Path) -> Path:
    """The phantom with a clinic's names: BRSTEM, Parotid_L, Cord, PTV1 (70 Gy by prescription only) and a
    Cochlea_L, an organ outside the challenge's seven."""
    from DoseSegLib.io.patient import read_volume, write_volume
    from DoseSegLib.io.phantom import write_phantom_patient

    write_phantom_patient(folder)
    structures = folder / "structures"
    for canonical, vendor in VENDOR_NAMES.items():
        (structures / f"{canonical}.nrrd").rename(structures / f"{vendor}.nrrd")
    larynx = read_volume(structures / "Larynx.nrrd")
    cochlea = np.zeros_like(larynx.array)
    cochlea[2:5, 2:5, 3:7] = 1
    write_volume(structures / "Cochlea_L.nrrd", larynx.with_array(cochlea))
    return folder


def test_run_comparison_and_evaluate_give_the_same_dvh_errors_on_vendor_names(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
) -> None:
    import json
    import shutil

    from DoseSegLib.io.tables import read_csv

    patient = _vendor_patient(tmp_path / "reference" / "vendor")
    flags = ["--prescription", "PTV1=70"]
    assert main(["run", str(patient), "-o", str(tmp_path / "run"), "--device", "cpu", "--no-segment",
                 "--no-radiomics", *flags]) == 0
    (tmp_path / "pred" / "vendor").mkdir(parents=True)
    shutil.copy(tmp_path / "run" / "dose.nrrd", tmp_path / "pred" / "vendor" / "dose.nrrd")
    assert main(["evaluate", str(tmp_path / "pred"), "--reference", str(tmp_path / "reference"),
                 "-o", str(tmp_path / "eval"), *flags]) == 0
    capsys.readouterr()
    run_rows = read_csv(tmp_path / "run" / "dvh_errors.csv")
    eval_rows = read_csv(tmp_path / "eval" / "dvh_errors.csv")
    ran = {(r["structure"], r["metric"]): r for r in run_rows}
    evaluated = {(r["structure"], r["metric"]): r for r in eval_rows}
    assert sorted(ran) == sorted(evaluated) and len(ran) == len(run_rows) == len(eval_rows)
    covered = {r["structure"] for r in eval_rows}
    assert {"PTV1", "PTV56", "Brainstem", "LeftParotid", "SpinalCord", "Cochlea_L"} <= covered
    assert not covered & {"BRSTEM", "Parotid_L", "Cord", "Body"}
    for key, row in ran.items():
        for column in ("patient", "reference", "predicted", "abs_error"):
            if column == "patient":
                assert row[column] == evaluated[key][column] == "vendor"
            else:
                assert float(row[column]) == pytest.approx(float(evaluated[key][column]), abs=1e-5), (key, column)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    per_patient = read_csv(tmp_path / "eval" / "per_patient.csv")[0]
    assert summary["comparison"]["dvh_error_gy"] == pytest.approx(float(per_patient["dvh_error"]), abs=1e-4)
    assert summary["comparison"]["dose_error_gy"] == pytest.approx(float(per_patient["dose_error"]), abs=1e-4)
    assert set(summary["comparison"]["dvh_error_structures"]) == covered
    report = (tmp_path / "run" / "report.html").read_text()
    assert "here: PTV1, PTV56" in report
