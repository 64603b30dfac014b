"""A plan that is not head and neck, exported as a clinic exports it (CT series, RTSTRUCT, RTDOSE and an
RTPLAN holding the prescription), through ``doseseg run`` with the bundled head-and-neck model: the brain
plan of issue #29, which the model predicted 10 % hot without a word."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.core.alignment import body_mask
from DoseSegLib.core.case import Case
from DoseSegLib.io.phantom import make_phantom
from DoseSegLib.io.tables import read_csv

from dicom_helpers import write_dicom_patient

MODELS = Path(__file__).resolve().parents[1] / "Resources" / "Models"
PRESCRIPTION = 60.0


def brain_like_plan() -> Case:
    """A water-equivalent CT (0 HU in the body, as a TPS phantom), one target PTV1 whose dose is known only
    from the RTPLAN, brain names (the eyes and the chiasm are organs the model was not trained on) and a
    homogeneous plan dose of D50% about 1.02 x 60 Gy."""
    case = make_phantom(seed=40)
    ct = case.ct.with_array(np.where(body_mask(case.ct).array, 0, -1000).astype(np.int16))
    s = case.structures
    target = s["PTV70"].array.astype(bool) | s["PTV56"].array.astype(bool)
    structures = {"PTV1": s["PTV70"].with_array(target.astype(np.uint8)), "Brainstem": s["Brainstem"],
                  "Chiasm": s["Larynx"], "Eye_L": s["LeftParotid"], "Eye_R": s["RightParotid"]}
    assert case.dose is not None
    dose = case.dose.with_array(np.minimum(case.dose.array, 56.0) / 56.0 * 61.0)
    return replace(case, ct=ct, structures=structures, prescriptions={"PTV1": PRESCRIPTION}, dose=dose)


@pytest.mark.slow
def test_brain_like_dicom_plan_is_flagged_normalised_and_its_plan_qa_noted(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from DoseSegLib.cli.main import main

    folder = write_dicom_patient(tmp_path / "BRAIN1", brain_like_plan(), patient_id="BRAIN1")
    out = tmp_path / "out"
    assert main(["run", str(folder), "-o", str(out), "--no-radiomics", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["applicability"]["in_distribution"] is False
    assert any("outside the model's domain" in w for w in summary["warnings"])
    normalisation = summary["normalisation"]
    assert (normalisation["structure"], normalisation["metric"]) == ("PTV1", "mean")
    assert normalisation["prescription_gy"] == PRESCRIPTION  # from the RTPLAN: no --prescription given
    ratio = json.loads((MODELS / "openkbp-dose-unet24.prescription.json").read_text())["ratio"]
    ptv = next(r for r in read_csv(out / "dvh_metrics.csv") if r["structure"] == "PTV1")
    assert float(ptv["Mean[Gy]"]) == pytest.approx(ratio * PRESCRIPTION, rel=2e-3)
    assert normalisation["ratio"] == pytest.approx(ratio, abs=2e-4)  # 61.3 Gy is the convention, not a miss
    assert f"= {ratio:.4g} x the 60 Gy prescription (the convention of the model's training plans)" \
        in capsys.readouterr().out
    rows = read_csv(out / "plan_qa.csv")
    assert {r["structure"] for r in rows} >= {"PTV1", "Brainstem", "Eye_L", "OpticChiasm"}
    assert all(r["note"].startswith("case outside the model's domain") for r in rows)
    unknown = {r["structure"] for r in rows if r["note"].endswith("not an organ the model was trained on")}
    assert unknown == {"OpticChiasm", "Eye_L", "Eye_R"} & {r["structure"] for r in rows}  # Chiasm: canonical name
    report = (out / "report.html").read_text()
    assert "<b>Outside the model's domain</b>" in report and "verdicts are extrapolations" in report
