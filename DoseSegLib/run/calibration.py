"""The uncertainty calibration of a dose model on validation patients (the ``<model>.uncertainty.json`` sidecar).

Each validation patient gives its predicted and reference DVH metrics and those of a few stochastic
predictions (:func:`patient_record`); split-conformal intervals are calibrated per metric family
on all of them (``analysis.intervals.calibrate``) and their coverage measured leave-one-patient-out
(``analysis.coverage.coverage_report``). ``scripts/calibrate_uncertainty.py`` (the bundled model,
with a method comparison and a resumable cache) and ``doseseg publish-model`` (a clinic's model, on
its cohort's validation split) both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from DoseSegLib.analysis.coverage import coverage_report, observations
from DoseSegLib.analysis.intervals import OAR_NEAR_MAX, calibrate
from DoseSegLib.analysis.metric_names import MEAN, dose_at_pct
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.dose.predict import DoseModel, predict_case_dose
from DoseSegLib.models.dose.uncertainty import SamplingConfig, sample_doses, sample_plans

KEPT = ("structure", MEAN, *OAR_NEAR_MAX, dose_at_pct(95))
# The 90 % intervals need at least 9 values of each metric family in every leave-one-patient-out fold:
# 10 patients when each has one target (a split too small for that is refused by the calibration itself).
MIN_PATIENTS = 10


def slim(rows: list[dict]) -> list[dict]:
    """The metric rows reduced to the calibrated metrics."""
    return [{k: r[k] for k in KEPT if r.get(k) is not None} for r in rows]


def prediction_record(model: DoseModel, case: Case) -> dict:
    """An aligned case's targets, predicted and reference metrics."""
    dose = predict_case_dose(model, case)
    return {"targets": case.targets,
            "predicted": slim(evaluate_plan(replace(case, dose=dose), constraints=[]).metrics),
            "reference": slim(evaluate_plan(case, constraints=[]).metrics)}


def sample_record(model: DoseModel, case: Case, sampling: SamplingConfig) -> list[list[dict]]:
    """The metrics of each stochastic prediction of an aligned case."""
    return [slim(plan.metrics) for plan in sample_plans(case, sample_doses(model, case, sampling))]


def patient_record(model: DoseModel, folder: Path, sampling: SamplingConfig) -> dict:
    """One validation patient's record (see the module's docstring)."""
    case = align_case(read_patient(folder))
    return {**prediction_record(model, case), "samples": sample_record(model, case, sampling)}


def sidecar(name: str, sha256: str, records: Sequence[dict], sampling: SamplingConfig, level: float,
            data: str, comparison: dict | None = None) -> dict:
    """The calibration sidecar of model ``name``/``sha256`` from validation ``records``."""
    report = coverage_report(records, level)
    report["method_comparison"] = comparison or {}
    return {"model": name, "sha256": sha256, "sampling": asdict(sampling),
            "calibration": calibrate(observations(records)).to_dict(), "validation": report, "data": data}


def calibrate_model(model: DoseModel, name: str, sha256: str, folders: Sequence[Path],
                    sampling: SamplingConfig | None = None, level: float = 0.9) -> dict:
    """The sidecar of a dose model calibrated on validation patient ``folders`` (at least :data:`MIN_PATIENTS`).

    The sampling method is Monte-Carlo dropout with mirroring (the bundled model's choice) when the
    network has dropout, else mirroring with CT noise.
    """
    if len(folders) < MIN_PATIENTS:
        raise DoseSegError(f"{len(folders)} validation patients: the calibration needs at least {MIN_PATIENTS}")
    if sampling is None:
        has_dropout = getattr(model.net.config, "dropout", 0) > 0
        sampling = SamplingConfig(method="dropout+mirror" if has_dropout else "mirror+noise")
    records = [patient_record(model, folder, sampling) for folder in folders]
    return sidecar(name, sha256, records, sampling, level, f"validation split, {len(folders)} patients")
