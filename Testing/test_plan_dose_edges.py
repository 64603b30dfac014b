"""A plan dose the run cannot fully use: all zeros (no comparison, a warning naming the file), or a grid
covering part of the structures (their plan QA rows not evaluated); the body, and a structure that looks like a
target but has no prescription (CTV70, zPTV70_opt, GTV), are never graded as an organ."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from model_helpers import fake_segmentation

from DoseSegLib.analysis.difficulty import DifficultyCalibration
from DoseSegLib.analysis.difficulty_features import case_items
from DoseSegLib.analysis.dosecheck import dose_coverage
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.analysis.plan_qa import NOT_EVALUATED, UNKNOWN_COVERAGE, plan_qa_rows
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.volume import crop_box
from DoseSegLib.io.patient import DOSE_FILE, read_patient, write_patient
from DoseSegLib.io.phantom import make_phantom
from DoseSegLib.io.tables import read_csv

MODELS = Path(__file__).resolve().parents[1] / "Resources" / "Models"
SHAPE = (40, 40, 32)


def _with_body(case: Case, name: str = "BODY") -> Case:
    """The phantom with its body as a structure named as a TPS names it (BODY, read as Body)."""
    return replace(case, structures={**case.structures, name: case.require_possible_dose_mask()})


def _pipeline():  # the tiny dose model with the bundled model's interval calibration: plan QA rows
    from DoseSegLib.run.pipeline import Pipeline, RunOptions

    pipeline = Pipeline(device="cpu", options=RunOptions(radiomics=False, segment=False))
    data = json.loads((MODELS / "openkbp-dose-unet24.uncertainty.json").read_text())
    pipeline.difficulty = DifficultyCalibration.from_dict(data["difficulty"])
    return pipeline


def test_plan_qa_rows_of_structures_the_plan_dose_does_not_cover_are_not_evaluated() -> None:
    intervals = [{"structure": s, "metric": "Mean[Gy]", "predicted": 20.0, "lower": 15.0, "upper": 25.0}
                 for s in ("Out", "Part", "Edge", "Whole")]
    plan = [{"structure": s, "Mean[Gy]": 0.0} for s in ("Out", "Part", "Edge", "Whole")]
    rows = plan_qa_rows(intervals, plan, {"Out": 0.0, "Part": 0.631, "Edge": 0.98996, "Whole": 0.995})
    assert [r["verdict"] for r in rows] == [NOT_EVALUATED] * 3 + ["below achievable"]
    assert [r["note"] for r in rows] == ["plan dose covers 0 % of the structure",
                                         "plan dose covers 63.1 % of the structure",
                                         "plan dose covers 98.9 % of the structure", ""]
    assert plan_qa_rows(intervals, plan, {"Out": 0.0}, outside_domain=True)[0]["note"].startswith(
        "plan dose covers 0 % of the structure; case outside the model's domain")
    unknown = plan_qa_rows(intervals, plan, {"Whole": 0.995})  # a structure of unknown coverage is not covered
    assert [(r["verdict"], r["note"]) for r in unknown] == [(NOT_EVALUATED, UNKNOWN_COVERAGE)] * 3 + [
        ("below achievable", "")]


def test_the_body_gets_no_interval() -> None:
    case = align_case(_with_body(make_phantom(shape=SHAPE), "Body"))
    names = {item.structure for item in case_items(case, evaluate_plan(case, constraints=[]), OARS)}
    assert "Body" not in names and {"PTV70", "Brainstem"} <= names


def _with_unprescribed(case: Case) -> Case:
    """The phantom with a CTV70, a zPTV70_opt and a GTV inside PTV70 (no prescription: no RTPLAN, no --prescription)."""
    from scipy.ndimage import binary_erosion

    ptv = case.structures["PTV70"]
    inner = {n: ptv.with_array(binary_erosion(ptv.array.astype(bool), iterations=i))
             for n, i in (("CTV70", 1), ("zPTV70_opt", 1), ("GTV", 2))}
    return replace(case, structures={**case.structures, **inner})


def test_a_structure_looking_like_a_target_without_a_prescription_is_not_an_organ() -> None:
    from DoseSegLib.core.case import looks_like_target

    assert [looks_like_target(n) for n in ("CTV70", "gtv", "ITV_1", "PTV1", "zPTV70_opt", "Brainstem", "Cavity")] == [
        True, True, True, True, True, False, False]
    case = align_case(_with_unprescribed(make_phantom(shape=SHAPE)))
    assert case.unprescribed_targets == ["CTV70", "zPTV70_opt", "GTV"]
    names = {item.structure for item in case_items(case, evaluate_plan(case, constraints=[]), OARS)}
    assert not names & {"CTV70", "zPTV70_opt", "GTV"} and {"PTV70", "Brainstem"} <= names
    prescribed = replace(case, prescriptions={"CTV70": 70.0})  # given a dose, CTV70 is a target with its interval
    items = case_items(prescribed, evaluate_plan(prescribed, constraints=[]), OARS)
    assert {i.family for i in items if i.structure == "CTV70"} and "zPTV70_opt" not in {i.structure for i in items}
    assert prescribed.unprescribed_warning() == (
        "zPTV70_opt, GTV look like targets but have no prescription: left out of plan QA and the organ intervals; "
        "give each with --prescription, e.g. --prescription zPTV70_opt=70")
    assert make_phantom(shape=SHAPE).unprescribed_warning() is None


def test_a_ctv_without_a_prescription_gets_no_plan_qa_verdict_and_one_warning(
    tiny_models: Path, tmp_path: Path
) -> None:
    """An NRRD folder with CTV70 and no RTPLAN: no 'CTV70 Mean above achievable' (an organ-sparing verdict)."""
    patient = tmp_path / "patient"
    patient.mkdir()
    write_patient(patient, _with_unprescribed(make_phantom(shape=SHAPE)))
    result = _pipeline().run(patient, tmp_path / "out")
    graded = {r["structure"] for r in read_csv(tmp_path / "out" / "plan_qa.csv")}
    assert graded and "PTV70" in graded and not graded & {"CTV70", "zPTV70_opt", "GTV"}
    warnings = json.loads((tmp_path / "out" / "summary.json").read_text())["warnings"]
    said = [w for w in warnings if "look like targets but have no prescription" in w]
    assert len(said) == 1 and said[0].startswith("CTV70, GTV, zPTV70_opt look like targets") and result.plan_qa


def test_plan_dose_covering_half_the_ct_leaves_the_uncovered_structures_not_evaluated(
    tiny_models: Path, tmp_path: Path
) -> None:
    case = _with_body(make_phantom(shape=SHAPE))
    dose = case.require_dose()
    half = dose.shape[2] // 2
    upper = crop_box(dose, (slice(0, dose.shape[0]), slice(0, dose.shape[1]), slice(half, dose.shape[2])))
    patient = tmp_path / "patient"
    patient.mkdir()
    write_patient(patient, replace(case, dose=upper))
    aligned = align_case(read_patient(patient))
    coverage = dose_coverage(read_patient(patient).require_dose(), aligned.structures)
    partial = {name for name, fraction in coverage.items() if fraction < 0.99}
    assert partial and set(coverage) - partial - {"Body"}, "the test needs covered and uncovered structures"

    result = _pipeline().run(patient, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "plan_qa.csv")
    assert rows and "Body" not in {r["structure"] for r in rows}
    for row in rows:
        covered = coverage[row["structure"]]
        assert (row["verdict"] == NOT_EVALUATED) == (covered < 0.99), row
        assert row["note"].startswith("plan dose covers ") == (covered < 0.99), row
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["plan_qa"][NOT_EVALUATED] == sum(r["verdict"] == NOT_EVALUATED for r in rows) > 0
    assert sum(summary["plan_qa"].values()) == len(rows) == len(result.plan_qa)
    assert f">{NOT_EVALUATED}<" in (tmp_path / "out" / "report.html").read_text()


def test_structures_the_plan_dose_does_not_cover_are_left_out_of_the_comparison(
    tiny_models: Path, tmp_path: Path
) -> None:
    """A cropped plan dose counts 0 Gy outside its grid: a partly covered Esophagus entered the DVH error with a
    reference mean far too low (11.11 Gy instead of 5.71 in the hostile test). It is left out and named."""
    from DoseSegLib.analysis.evaluation import score_patient

    case = make_phantom(shape=SHAPE)
    dose = case.require_dose()
    half = dose.shape[2] // 2
    upper = crop_box(dose, (slice(0, dose.shape[0]), slice(0, dose.shape[1]), slice(half, dose.shape[2])))
    patient = tmp_path / "patient"
    patient.mkdir()
    write_patient(patient, replace(case, dose=upper))
    result = _pipeline().run(patient, tmp_path / "out")
    coverage = dose_coverage(upper, result.case.structures)
    partial = [n for n, fraction in coverage.items() if fraction < 0.99]
    assert partial and len(partial) < len(coverage), "the test needs covered and uncovered structures"
    comparison = result.comparison
    assert comparison is not None and comparison.not_covered == partial
    covered = replace(result.case, structures={n: m for n, m in result.case.structures.items() if n not in partial})
    everything = score_patient(result.dose, result.case).dvh_error
    assert comparison.dvh_error == pytest.approx(score_patient(result.dose, covered).dvh_error, rel=1e-6)
    assert abs(comparison.dvh_error - everything) > 0.1, "the uncovered structures changed the DVH error"
    out = tmp_path / "out"
    for table in ("dvh_errors.csv", "comparison.csv"):
        listed = {r["structure"] for r in read_csv(out / table)}
        assert listed and not listed & set(partial), table
    summary = json.loads((out / "summary.json").read_text())["comparison"]
    assert summary["not_covered"] == partial and not set(summary["dvh_error_structures"]) & set(partial)
    assert f"0 Gy there): {', '.join(partial)}.</p>" in (out / "report.html").read_text()


def test_an_auto_segmented_organ_outside_the_plan_dose_is_not_evaluated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan dose's grid ends before LeftParotid, which the patient lacks: the auto-contour's coverage is
    measured (0 %), not taken as full from the patient's structures."""
    from DoseSegLib.run.pipeline import Pipeline, RunOptions

    fake_segmentation(monkeypatch, tmp_path)
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    case = make_phantom(shape=SHAPE)
    dose = case.require_dose()
    right = crop_box(dose, (slice(0, 29), slice(0, dose.shape[1]), slice(0, dose.shape[2])))  # LeftParotid: x 30-35
    patient = tmp_path / "patient"
    patient.mkdir()
    write_patient(patient, replace(case, dose=right,
                                   structures={n: m for n, m in case.structures.items() if n != "LeftParotid"}))
    pipeline = Pipeline(device="cpu", options=RunOptions(radiomics=False))
    pipeline.difficulty = _pipeline().difficulty
    result = pipeline.analyse(patient)
    assert "LeftParotid" in result.auto_segmented
    rows = [r for r in result.plan_qa if r["structure"] == "LeftParotid"]
    assert rows and all(r["verdict"] == NOT_EVALUATED and r["note"] == "plan dose covers 0 % of the structure"
                        for r in rows), rows
    assert any(r["verdict"] != NOT_EVALUATED for r in result.plan_qa), "the covered structures are graded"


@pytest.mark.parametrize("where", ["everywhere", "inside the body"])
def test_a_zero_plan_dose_is_a_warning_naming_its_file(where: str, tiny_models: Path, tmp_path: Path) -> None:
    case = make_phantom(shape=SHAPE)
    zero = np.zeros_like(case.require_dose().array)
    if where == "inside the body":  # dose only in the air around the patient (e.g. a wrong dose grid)
        body = align_case(case).require_possible_dose_mask()
        assert not body.array[0, 0, 0]
        zero[0, 0, 0] = 5.0
    patient = tmp_path / "patient"
    patient.mkdir()
    write_patient(patient, replace(case, dose=case.require_dose().with_array(zero)))
    result = _pipeline().run(patient, tmp_path / "out")
    assert result.comparison is None and result.plan_qa == []
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["comparison"] is None and summary["plan_qa"] is None
    assert f"{patient / DOSE_FILE}: the plan dose is zero {where}" in "\n".join(summary["warnings"])
    assert (tmp_path / "out" / "dose.nrrd").is_file() and not (tmp_path / "out" / "plan_qa.csv").exists()
