"""Calibrated uncertainty: sampling, split-conformal intervals, uncertain goals, CLI outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import tiny_dose_config

from DoseSegLib.analysis.constraints import FAIL, NOT_EVALUATED, PASS
from DoseSegLib.analysis.coverage import coverage_report
from DoseSegLib.analysis.intervals import (
    FAMILIES,
    UNCERTAIN,
    Calibration,
    Observation,
    Spread,
    calibrate,
    interval_rows,
    mark_uncertain,
    spreads,
)
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common.catalogue import find_model, sha256_of
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.dose.net import DoseNet
from DoseSegLib.models.dose.uncertainty import SamplingConfig, load_calibration, sample_doses

TINY = tiny_dose_config(dropout=0.2)
SMALL = (32, 40, 32)  # a coarse phantom (5.4 x 5.4 x 3.3 mm voxels): fast on a busy CPU


def _synthetic_calibration(scale: float = 1.645) -> Calibration:
    """Scores of a Gaussian error of std = spread + floor: the 90% quantile near 1.645."""
    rng = np.random.default_rng(0)
    return Calibration({f: 0.5 for f in FAMILIES}, {f: sorted(np.abs(rng.normal(0, 1, 400)) * scale / 1.645)
                                                  for f in FAMILIES})


def _catalogue(folder: Path, calibration: Calibration | None = None, samples: int = 2) -> Path:
    """A tiny dose model with dropout in a catalogue folder, with a calibration sidecar."""
    torch.manual_seed(0)
    save_weights(folder / "tiny.pt", DoseNet(TINY), {"patch": [32, 32, 32]})
    sha = sha256_of(folder / "tiny.pt")
    entry = {"name": "tiny", "task": "dose", "file": "tiny.pt", "sha256": sha, "version": "test", "default": True}
    (folder / "catalogue.json").write_text(json.dumps({"models": [entry]}))
    sidecar = {"model": "tiny", "sha256": sha, "sampling": {"samples": samples, "method": "dropout+mirror", "seed": 0},
               "calibration": (calibration or _synthetic_calibration()).to_dict()}
    (folder / "tiny.uncertainty.json").write_text(json.dumps(sidecar))
    return folder


def test_intervals_contain_the_prediction_and_scale_with_spread() -> None:
    calibration = _synthetic_calibration()
    narrow = Spread("Brainstem", "Mean[Gy]", "oar_mean", 10.0, 0.1)
    wide = Spread("Brainstem", "Mean[Gy]", "oar_mean", 10.0, 3.0)
    low = Spread("Larynx", "Mean[Gy]", "oar_mean", 0.2, 3.0)
    rows = interval_rows([narrow, wide, low], calibration, 0.9)
    for row in rows:
        assert row["lower"] <= row["predicted"] <= row["upper"] and row["lower"] >= 0 and row["level"] == 0.9
    assert rows[1]["upper"] - rows[1]["lower"] > rows[0]["upper"] - rows[0]["lower"]
    wider = interval_rows([narrow], calibration, 0.95)[0]
    assert wider["upper"] > rows[0]["upper"]


def test_split_conformal_covers_fresh_data_at_the_level() -> None:
    """Errors drawn with std proportional to the spread: calibrated on 300, 90% of 3000 new ones fall inside."""
    rng = np.random.default_rng(1)

    def draw(n: int) -> list[Observation]:
        spread = rng.uniform(0.2, 3.0, n)
        truth = rng.normal(0, 2 * spread)
        return [Observation(Spread("S", "Mean[Gy]", f, 20.0, s), 20.0 + t)
                for f in FAMILIES for s, t in zip(spread, truth)]

    calibration = calibrate(draw(300))
    fresh = draw(3000)
    inside = [o.error <= calibration.half_width(o.spread, 0.9) for o in fresh]
    assert 0.87 < np.mean(inside) < 0.93


def test_bad_levels_and_calibrations_are_clear_errors() -> None:
    calibration = Calibration({f: 0.5 for f in FAMILIES}, {f: [1.0] * 9 for f in FAMILIES})
    with pytest.raises(DoseSegError, match="more than the 9 calibration values"):
        calibration.quantile("oar_mean", 0.95)
    with pytest.raises(DoseSegError, match="between 0 and 1"):
        calibration.quantile("oar_mean", 1.5)
    with pytest.raises(DoseSegError, match="lacks the families"):
        Calibration.from_dict({"floors": {}, "scores": {}})
    with pytest.raises(DoseSegError, match="at least 2 samples"):
        spreads([], [[]], {})


def test_goal_straddling_its_limit_is_uncertain() -> None:
    intervals = [{"structure": "LeftParotid", "metric": "Mean[Gy]", "predicted": 25.0, "lower": 22.0, "upper": 28.0,
                  "level": 0.9},
                 {"structure": "SpinalCord", "metric": "D0.1cc[Gy]", "predicted": 40.0, "lower": 38.0, "upper": 42.0,
                  "level": 0.9}]
    goals = [
        {"structure": "LeftParotid", "metric": "Mean[Gy]", "operator": "<", "limit": 26.0, "value": 25.0,
         "result": PASS, "detail": "RTOG"},
        {"structure": "SpinalCord", "metric": "D0.1cc[Gy]", "operator": "<", "limit": 45.0, "value": 40.0,
         "result": PASS, "detail": ""},
        {"structure": "SpinalCord", "metric": "D0.1cc[Gy]", "operator": ">", "limit": 45.0, "value": 40.0,
         "result": FAIL, "detail": ""},
        {"structure": "PTV70", "metric": "D98%[Gy]", "operator": ">=", "limit": 66.5, "value": 60.0,
         "result": FAIL, "detail": ""},
        {"structure": "Lens*", "metric": "D0.03cc[Gy]", "operator": "<", "result": NOT_EVALUATED, "detail": "absent"},
    ]
    marked = mark_uncertain(goals, intervals)
    assert [g["result"] for g in marked] == [UNCERTAIN, PASS, FAIL, FAIL, NOT_EVALUATED]
    assert "straddles" in marked[0]["detail"] and "RTOG" in marked[0]["detail"]
    assert "38.0-42.0" in marked[1]["detail"]
    assert goals[0]["result"] == PASS  # the input rows are not modified


def test_coverage_report_counts_leave_one_out_hits() -> None:
    rng = np.random.default_rng(2)
    records = []
    for _ in range(12):
        rows = [{"structure": "PTV70", "D95%[Gy]": 66.0, "D2%[Gy]": 73.0},
                {"structure": "Brainstem", "Mean[Gy]": 10.0, "D0.1cc[Gy]": 40.0}]
        samples = [[{k: (v + rng.normal(0, 1) if k != "structure" else v) for k, v in r.items()} for r in rows]
                   for _ in range(3)]
        reference = [{k: (v + rng.normal(0, 1.5) if k != "structure" else v) for k, v in r.items()} for r in rows]
        records.append({"predicted": rows, "reference": reference, "samples": samples, "targets": {"PTV70": 70.0}})
    report = coverage_report(records, 0.8)
    assert report["pooled"]["n"] == 48 and set(report["families"]) == set(FAMILIES)
    for family in report["families"].values():
        low, high = family["ci95"]
        assert low <= family["coverage"] <= high and family["n"] == 12 and family["mean_width_gy"] > 0


def test_sampling_is_deterministic_for_a_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.phantom import make_phantom
    from DoseSegLib.models.dose.predict import load_dose_model

    monkeypatch.setenv("DOSESEG_MODELS", str(_catalogue(tmp_path)))
    model = load_dose_model(device="cpu")
    case = align_case(make_phantom(SMALL, (5.4, 5.4, 3.3)))
    first = sample_doses(model, case, SamplingConfig(2, "dropout+mirror", seed=3))
    again = sample_doses(model, case, SamplingConfig(2, "dropout+mirror", seed=3))
    assert all(np.array_equal(a.array, b.array) for a, b in zip(first, again))
    assert not np.array_equal(first[0].array, first[1].array)
    assert all(not m.training for m in model.net.modules())  # dropout switched off again


def test_calibration_for_other_weights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from DoseSegLib.models.dose.predict import load_dose_model

    folder = _catalogue(tmp_path)
    sidecar = json.loads((folder / "tiny.uncertainty.json").read_text())
    (folder / "tiny.uncertainty.json").write_text(json.dumps({**sidecar, "sha256": "0" * 64}))
    monkeypatch.setenv("DOSESEG_MODELS", str(folder))
    with pytest.raises(DoseSegError, match="calibrated for other weights"):
        load_calibration(load_dose_model(device="cpu"))
    (folder / "tiny.uncertainty.json").unlink()
    with pytest.raises(DoseSegError, match="no uncertainty calibration"):
        load_calibration(load_dose_model(device="cpu"))


def test_predict_dose_writes_std_and_intervals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from DoseSegLib.cli.main import main
    from DoseSegLib.io.patient import read_volume
    from DoseSegLib.io.phantom import write_phantom_patient
    from DoseSegLib.io.tables import read_csv

    (tmp_path / "models").mkdir()
    phantom_dir = tmp_path / "phantom"
    write_phantom_patient(phantom_dir, shape=SMALL, spacing=(5.4, 5.4, 3.3))
    monkeypatch.setenv("DOSESEG_MODELS", str(_catalogue(tmp_path / "models")))
    outputs = []
    for run in ("a", "b"):
        assert main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / run), "--uncertainty",
                     "--level", "0.8", "--device", "cpu"]) == 0
        outputs.append(tmp_path / run / "phantom")
    std = read_volume(outputs[0] / "dose_std.nrrd")
    dose = read_volume(outputs[0] / "dose.nrrd")
    assert std.same_grid(dose) and std.array.min() >= 0 and std.array.max() > 0
    rows = read_csv(outputs[0] / "dvh_intervals.csv", ("structure", "metric", "predicted", "lower", "upper", "level"))
    metrics = {(r["structure"], r["metric"]) for r in rows}
    assert ("PTV70", "D95%[Gy]") in metrics and ("PTV70", "D2%[Gy]") in metrics
    assert ("SpinalCord", "Mean[Gy]") in metrics and ("SpinalCord", "D0.1cc[Gy]") in metrics
    for row in rows:
        assert float(row["lower"]) <= float(row["predicted"]) <= float(row["upper"]) and row["level"] == "0.8"
    assert (outputs[0] / "dvh_intervals.csv").read_text() == (outputs[1] / "dvh_intervals.csv").read_text()
    code = main(["predict-dose", str(phantom_dir), "-o", str(tmp_path / "c"), "--uncertainty", "--level", "0.999",
                 "--device", "cpu"])
    assert code != 0 and not (tmp_path / "c").exists()


def test_run_writes_intervals_marks_goals_and_shows_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from DoseSegLib.io.phantom import write_phantom_patient
    from DoseSegLib.run.pipeline import Pipeline
    from DoseSegLib.run.results import RunOptions

    (tmp_path / "models").mkdir()
    # an enormous calibration quantile: every interval straddles every limit it concerns
    monkeypatch.setenv("DOSESEG_MODELS", str(_catalogue(tmp_path / "models", _synthetic_calibration(1e4))))
    write_phantom_patient(tmp_path / "phantom", shape=SMALL, spacing=(5.4, 5.4, 3.3))
    options = RunOptions(segment=False, radiomics=False, uncertainty=True)
    result = Pipeline("cpu", options).run(tmp_path / "phantom", tmp_path / "out")
    assert (tmp_path / "out" / "dose_std.nrrd").is_file() and (tmp_path / "out" / "dvh_intervals.csv").is_file()
    with_interval = {(r["structure"], r["metric"]) for r in result.uncertainty.intervals}
    checked = [g for g in result.constraints if (g["structure"], g["metric"]) in with_interval]
    assert checked and all(g["result"] == UNCERTAIN for g in checked)
    assert "uncertain" in (tmp_path / "out" / "constraints.csv").read_text()
    report = (tmp_path / "out" / "report.html").read_text()
    assert "How far to trust the DVH metrics (90% intervals)" in report and "dvh_intervals.csv" in report
    curve = result.dvhs["PTV70"]
    doses, low, high = result.uncertainty.dvh_band("PTV70", curve)
    assert len(doses) == len(low) == len(high) and np.all(low <= high)
    assert np.all(low <= curve.volume_pct + 1e-9) and np.all(curve.volume_pct <= high + 1e-9)  # holds its curve
    assert np.any(low < high)


@pytest.mark.slow
def test_phantom_gets_wider_intervals_than_a_validation_patient(shared_data: Path, tmp_path: Path) -> None:
    """The bundled model and its shipped calibration: an out-of-distribution phantom (flagged by the
    applicability check, so its intervals also hold the samples' spread) is less certain."""
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.patient import read_patient
    from DoseSegLib.io.phantom import write_phantom_patient
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose
    from DoseSegLib.models.dose.uncertainty import predict_dose_uncertainty
    from DoseSegLib.run.trust import TrustChecks

    model = load_dose_model(device="cpu")
    assert model.entry == find_model("dose")

    def widths(folder: Path, outside_domain: bool) -> dict[str, float]:
        case = align_case(read_patient(folder))
        dose = predict_case_dose(model, case)
        verdict = TrustChecks.load(model, "cpu").applicability(case, dose)
        assert verdict is not None and verdict.in_distribution is not outside_domain
        rows = predict_dose_uncertainty(model, case, dose, outside_domain=outside_domain).intervals
        assert all(r["lower"] <= r["predicted"] <= r["upper"] for r in rows)
        by_family: dict[str, list[float]] = {}
        for r in rows:
            family = "target" if r["structure"] in case.targets else "oar"
            by_family.setdefault(family, []).append(r["upper"] - r["lower"])
        return {f: float(np.median(v)) for f, v in by_family.items()}

    write_phantom_patient(tmp_path / "phantom")
    phantom = widths(tmp_path / "phantom", True)
    typical = widths(shared_data / "openkbp" / "validation" / "pt_201", False)
    assert phantom["target"] > typical["target"] and phantom["oar"] > typical["oar"]
