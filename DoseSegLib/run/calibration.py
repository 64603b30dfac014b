"""A dose model's calibrations from its training data: uncertainty intervals, applicability, prescription convention.

The uncertainty calibration (``<model>.uncertainty.json``): each validation patient gives its predicted
and reference DVH metrics and those of a few stochastic predictions (:func:`patient_record`);
split-conformal intervals are calibrated per metric family on all of them
(``analysis.intervals.calibrate``) and their coverage measured leave-one-patient-out
(``analysis.coverage.coverage_report``). ``scripts/calibrate_uncertainty.py`` (the bundled model,
with a method comparison and a resumable cache) and ``doseseg publish-model`` (a clinic's model, on
its cohort's validation split) both use it. :func:`calibrate_published` also writes, beside a published
clinic model, the applicability reference (``models.features.applicability``: training patients as the
reference, validation patients for the threshold) and the prescription convention of its training plans
(``analysis.normalisation``), each when the cohort allows it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from DoseSegLib.analysis.coverage import coverage_report, observations
from DoseSegLib.analysis.intervals import OAR_NEAR_MAX, calibrate
from DoseSegLib.analysis.metric_names import MEAN, dose_at_pct
from DoseSegLib.analysis.normalisation import METRICS, measure_convention, target_metric
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.analysis.sampling import structure_doses
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import Case, primary_target
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.listing import patient_folders
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.common.catalogue import ModelEntry
from DoseSegLib.models.dose.predict import DoseModel, predict_case_dose
from DoseSegLib.models.dose.uncertainty import SamplingConfig, sample_doses, sample_plans

log = logging.getLogger(__name__)
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
        raise DoseSegError(f"{len(folders)} validation patients, at least {MIN_PATIENTS} needed")
    if sampling is None:
        has_dropout = getattr(model.net.config, "dropout", 0) > 0
        sampling = SamplingConfig(method="dropout+mirror" if has_dropout else "mirror+noise")
    records = [patient_record(model, folder, sampling) for folder in folders]
    return sidecar(name, sha256, records, sampling, level, f"validation split, {len(folders)} patients")


def plan_ratios(folder: Path) -> dict | None:
    """The primary target's metric / prescription ratios of one training plan (None without a dose or a target)."""
    case = align_case(read_patient(folder))
    primary = primary_target(case)
    if case.dose is None or primary is None:
        return None
    name, prescription = primary.name, primary.prescription
    samples = structure_doses(case.dose, name, case.structures[name], case.fine_structures.get(name)).doses
    return {"patient": folder.name, "target": name, **{m: target_metric(samples, m) / prescription for m in METRICS}}


def _split(cohort: Path, part: str) -> list[Path]:
    return patient_folders(cohort / part) if (cohort / part).is_dir() else []


def calibrate_published(entry: ModelEntry, cohort: Path) -> dict[str, str]:
    """Write the calibrations of a published dose model beside its weights, each when ``cohort`` (its
    train/ and validation/) allows it; returns, per calibration, what its model card says."""
    from DoseSegLib.models.dose.predict import load_dose_model
    from DoseSegLib.models.features.applicability import (
        FALSE_ALARM,
        SUFFIX,
        calibrate_applicability,
        write_applicability,
    )

    train, validation = _split(cohort, "train"), _split(cohort, "validation")
    model = replace(load_dose_model(device="cpu", weights=entry.file), entry=entry)
    folder, notes = entry.file.parent, {}

    def attempt(kind: str, work) -> None:
        try:
            notes[kind] = work()
        except DoseSegError as exc:
            log.warning("%s of '%s' not calibrated: %s", kind, entry.name, exc)
            notes[kind] = f"not calibrated ({exc})."

    def uncertainty() -> str:
        written = calibrate_model(model, entry.name, entry.sha256, validation)
        (folder / f"{entry.name}.uncertainty.json").write_text(json.dumps(written, indent=1) + "\n")
        pooled = written["validation"]["pooled"]
        return (f"calibrated on {len(validation)} validation patients ({written['sampling']['method']}); "
                f"leave-one-patient-out coverage of the {written['validation']['level']:g} intervals "
                f"{pooled['coverage']:.3f} over {pooled['n']} metrics.")

    def applicability() -> str:
        # a threshold at this false-alarm rate in each leave-one-out fold (n - 1 patients); checked before any work
        needed = next(n for n in range(2, 10_000) if math.ceil(n * (1 - FALSE_ALARM)) <= n - 1)
        if len(validation) < needed:
            raise DoseSegError(f"{len(validation)} validation patients, at least {needed} needed for "
                               f"{FALSE_ALARM:.0%} false alarms")
        written = calibrate_applicability(model, train, validation)
        write_applicability(written, folder / f"{entry.name}{SUFFIX}")  # beside the weights (applicability_path)
        return (f"reference from {len(train)} training patients, threshold from {len(validation)} validation "
                f"patients (leave-one-out false alarm {written['validation']['leave_one_out_false_alarm']:.2f}).")

    def convention() -> str:
        rows = [row for row in map(plan_ratios, train) if row is not None]
        if len(rows) < MIN_PATIENTS:
            raise DoseSegError(f"{len(rows)} training plans with a dose and a target, at least {MIN_PATIENTS} needed")
        measured = measure_convention(rows)
        written = {"model": entry.name, "sha256": entry.sha256, **measured,
                   "data": f"training split, {len(rows)} plans"}
        (folder / f"{entry.name}.prescription.json").write_text(json.dumps(written, indent=1) + "\n")
        return f"{measured['metric']} = {measured['ratio']:g} x prescription over {len(rows)} training plans."

    attempt("uncertainty intervals (--uncertainty)", uncertainty)
    attempt("applicability check", applicability)
    attempt("prescription convention (dose normalisation)", convention)
    return notes
