"""The main job: read and align a patient, segment missing OARs, predict the dose, analyse, compare, report.

From Python::

    from DoseSegLib.run.pipeline import Pipeline
    result = Pipeline(device="auto").run("pt_201", "pt_201_results")
    print(result.comparison.dose_error if result.comparison else result.metrics[0])
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from DoseSegLib import __version__
from DoseSegLib.analysis.constraints import Constraint, load_constraints
from DoseSegLib.analysis.dvh import DVH
from DoseSegLib.analysis.plan import PlanEvaluation, evaluate_plan
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.tables import Row

log = logging.getLogger(__name__)

COHORT_COLUMNS = (
    "patient", "status", "error", "prescription_gy", "structures", "auto_segmented",
    "constraints_failed", "dose_error_gy", "dvh_error_gy", "seconds",
)
COMPARISON_COLUMNS = ("structure", "metric", "reference", "predicted", "difference")
STEPS = ("read", "align", "segment", "predict dose", "DVH and goals", "radiomics", "compare", "report", "write")


@dataclass
class RunOptions:
    """What the main job does besides predicting the dose.

    Attributes:
        segment: auto-segment the OARs the patient lacks when a segmentation model exists.
        segment_all: replace every OAR with the model's (implies ``segment``).
        radiomics: compute pyradiomics features of every structure on the CT.
        constraints: a constraint CSV (DoseSegLib's head-and-neck table when None).
        tta: average the dose and the OAR probabilities with left-right mirrored predictions.
        allow_high_dose: accept a reference dose above 200 Gy (refused as probably cGy otherwise).
        names: structure-name mapping (e.g. ``NameMapper({"Stem": "Brainstem"})``; default aliases when None).
        prescriptions: target doses in Gy (e.g. ``{"PTV_High": 70}``), overriding a dose in the name.
        any_site: run the head-and-neck models on a patient of another site (recorded in the notes).
    """

    segment: bool = True
    segment_all: bool = False
    radiomics: bool = True
    constraints: str | Path | None = None
    tta: bool = False
    allow_high_dose: bool = False
    names: NameMapper | None = None
    prescriptions: dict[str, float] | None = None
    any_site: bool = False

    def mapper(self) -> NameMapper:
        """The name mapping with the explicit prescriptions."""
        return (self.names or NameMapper()).with_prescriptions(self.prescriptions or {})


@dataclass
class Comparison:
    """The predicted dose against the patient's reference (planned) dose.

    Attributes:
        reference_dose: the reference dose on the CT grid (Gy).
        difference: predicted minus reference (Gy).
        dose_error: OpenKBP dose error (Gy).
        dvh_error: mean absolute OpenKBP DVH metric error (Gy).
        openkbp_rows: structure, metric, reference, predicted, abs_error of the challenge metrics.
        metric_differences: structure, metric, reference, predicted, difference of every DVH metric.
        reference_plan: DVHs, metrics and clinical goals of the reference dose.
    """

    reference_dose: Volume
    difference: Volume
    dose_error: float
    dvh_error: float
    openkbp_rows: list[Row]
    metric_differences: list[Row]
    reference_plan: PlanEvaluation


@dataclass
class PatientResult:
    """Everything the main job computed for one patient (doses in Gy, on the CT grid)."""

    name: str
    source: Path
    case: Case
    dose: Volume
    plan: PlanEvaluation
    radiomics: list[Row]
    comparison: Comparison | None
    structure_sources: dict[str, str]
    notes: list[str]
    models: dict[str, dict]
    device: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dvhs(self) -> dict[str, DVH]:
        return self.plan.dvhs

    @property
    def metrics(self) -> list[Row]:
        return self.plan.metrics

    @property
    def constraints(self) -> list[Row]:
        return self.plan.constraints

    @property
    def seconds(self) -> float:
        """Time spent on this patient (model loading excluded)."""
        return sum(seconds for step, seconds in self.timings.items() if step != "load models")

    @property
    def auto_segmented(self) -> list[str]:
        return [name for name, source in self.structure_sources.items() if source == "auto"]

    def summary(self) -> dict:
        """A JSON-serialisable digest (what ``summary.json`` holds)."""
        comparison = None
        if self.comparison is not None:
            comparison = {"dose_error_gy": self.comparison.dose_error, "dvh_error_gy": self.comparison.dvh_error}
        return {
            "patient": self.name,
            "source": str(self.source),
            "doseseg_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": self.device,
            "prescription_gy": self.case.main_prescription,
            "targets": self.case.targets,
            "targets_unknown_dose": self.case.unknown_targets,
            "structures": {name: self.structure_sources[name] for name in self.case.structures},
            "original_names": self.case.original_names,
            "notes": self.notes,
            "models": self.models,
            "constraints": self.plan.counts(),
            "failed_constraints": [_constraint_text(row) for row in self.constraints if row["result"] == "fail"],
            "comparison": comparison,
            "timings_s": {step: round(seconds, 3) for step, seconds in self.timings.items()},
            "patient_seconds": round(self.seconds, 3),
        }

    def cohort_row(self) -> Row:
        """One line of ``cohort_summary.csv``."""
        return {
            "patient": self.name, "status": "ok", "prescription_gy": self.case.main_prescription,
            "structures": len(self.case.structures), "auto_segmented": " ".join(self.auto_segmented),
            "constraints_failed": self.plan.counts().get("fail", 0),
            "dose_error_gy": self.comparison.dose_error if self.comparison else None,
            "dvh_error_gy": self.comparison.dvh_error if self.comparison else None,
            "seconds": round(self.seconds, 2),
        }


def _constraint_text(row: Row) -> str:
    value = row.get("value")
    shown = f" (value {float(value):.2f})" if value is not None else ""
    return f"{row['structure']} {row['metric']} {row['operator']} {float(row['limit']):g} {row['limit_unit']}{shown}"


@dataclass
class BatchResult:
    """Outcome of a cohort run: one cohort-summary row per patient, failures included."""

    rows: list[Row]
    summaries: list[dict]

    @property
    def failed(self) -> list[str]:
        return [str(row["patient"]) for row in self.rows if row["status"] != "ok"]


class _Steps:
    """Times each step of one patient and advances a progress bar (stderr) through them."""

    def __init__(self, patient: str, progress: bool, steps: Sequence[str] = STEPS) -> None:
        from tqdm import tqdm

        self.timings: dict[str, float] = {}
        self.patient = patient
        self.bar = tqdm(total=len(steps), desc=patient, unit="step", file=sys.stderr, leave=False, mininterval=0,
                        disable=not progress,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps {elapsed}")

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.set_description(f"{self.patient} {name}")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


class Pipeline:
    """The main job with its models loaded once (reuse one Pipeline for many patients).

    Args:
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        options: what to do besides the dose (see :class:`RunOptions`).
        dose_model: catalogue name of the dose model (default: the catalogue's default).
        progress: show progress bars on stderr.
    """

    def __init__(
        self, device: str = "auto", options: RunOptions | None = None, dose_model: str | None = None,
        progress: bool = False,
    ) -> None:
        from DoseSegLib.models.dose.predict import load_dose_model

        start = time.perf_counter()
        self.options = options or RunOptions()
        self.progress = progress
        self.constraints = load_constraints(self.options.constraints)
        self.dose_model = load_dose_model(dose_model, device)
        self.segmenter, self.segmenter_note = self._load_segmenter(device)
        self.load_seconds = time.perf_counter() - start

    def _load_segmenter(self, device: str) -> tuple[object | None, str]:
        """The catalogue's segmentation model, or None and why auto-segmentation is skipped."""
        from DoseSegLib.models.common.catalogue import load_catalogue

        if not (self.options.segment or self.options.segment_all):
            return None, "auto-segmentation turned off (--no-segment)"
        if not any(entry.task == "segmentation" for entry in load_catalogue()):
            return None, "no segmentation model in the catalogue: auto-segmentation skipped"
        from DoseSegLib.models.seg.predict import load_segmentation_model

        return load_segmentation_model(None, device), ""

    @property
    def models(self) -> dict[str, dict]:
        """Name, version and sha256 of each model in use."""
        models = {"dose": self.dose_model.entry.describe()}
        if self.segmenter is not None:
            models["segmentation"] = self.segmenter.entry.describe()
        return models

    def analyse(self, patient_dir: str | Path) -> PatientResult:
        """Run every step on one patient folder and return the results without writing anything."""
        return self._process(Path(patient_dir), None)

    def _process(self, folder: Path, out: Path | None) -> PatientResult:
        """Analyse ``folder`` and, when ``out`` is given, write the results there."""
        steps = _Steps(folder.name, self.progress, STEPS if out is not None else STEPS[:-2])
        try:
            result = self._analyse(folder, steps)
            result.timings = {"load models": self.load_seconds, **steps.timings}
            if out is not None:
                write_results(result, out, steps)
        finally:
            steps.close()
        return result

    def _analyse(self, folder: Path, steps: _Steps) -> PatientResult:
        from DoseSegLib.analysis.ctcheck import check_ct
        from DoseSegLib.analysis.dosecheck import (
            check_dose_coverage,
            check_dose_units,
            check_predicted_dose,
        )
        from DoseSegLib.analysis.site import check_site
        from DoseSegLib.core.alignment import align_case
        from DoseSegLib.io.patient import read_patient
        from DoseSegLib.models.dose.predict import predict_case_dose

        with steps("read"):
            case = read_patient(folder, self.options.mapper())
            check_ct(case.ct, str(folder / "ct.nrrd"))
            site_note = check_site(case, self.options.any_site)
            case = replace(case, notes=[*case.notes, site_note]) if site_note else case
            if case.dose is not None:
                check_dose_units(case.dose, str(folder / "dose.nrrd"), self.options.allow_high_dose)
        with steps("align"):
            reference = case.dose
            case = align_case(case)
            if reference is not None:
                check_dose_coverage(reference, case.structures, str(folder / "dose.nrrd"))
        with steps("segment"):
            case, sources, segment_notes = self._segment(case)
            notes = [*case.notes, *segment_notes]
            case = replace(case, structures=_ordered(case))
        with steps("predict dose"):
            dose = predict_case_dose(self.dose_model, case, tta=self.options.tta)
            check_predicted_dose(dose, case)
        with steps("DVH and goals"):
            plan = evaluate_plan(replace(case, dose=dose), constraints=self.constraints)
        with steps("radiomics"):
            radiomics = self._radiomics(case, notes)
        with steps("compare"):
            comparison = compare_doses(dose, case, self.constraints, plan) if case.dose is not None else None
        return PatientResult(case.name, folder, case, dose, plan, radiomics, comparison, sources, notes,
                             self.models, str(self.dose_model.device))

    def _radiomics(self, case: Case, notes: list[str]) -> list[Row]:
        if not self.options.radiomics:
            notes.append("radiomics skipped (--no-radiomics)")
            return []
        from DoseSegLib.analysis.radiomics import radiomics_table

        return radiomics_table(case.ct, case.structures)

    def _segment(self, case: Case) -> tuple[Case, dict[str, str], list[str]]:
        """The case with auto-segmented OARs added, each structure's source, and notes."""
        sources = {name: "patient" for name in case.structures}
        wanted = list(OARS) if self.options.segment_all else [n for n in OARS if n not in case.structures]
        if not wanted:
            return case, sources, []
        if self.segmenter is None:
            return case, sources, [f"{self.segmenter_note} (OARs not contoured: {', '.join(wanted)})"]
        from DoseSegLib.models.seg.predict import segment_case

        masks = segment_case(self.segmenter, case, tta=self.options.tta)
        found = {name: masks[name] for name in wanted if name in masks and masks[name].array.any()}
        notes = [f"auto-segmented: {', '.join(found)}"] if found else []
        missing = [name for name in wanted if name not in found]
        if missing:
            notes.append(f"the segmentation model found no {', '.join(missing)}")
        sources.update(dict.fromkeys(found, "auto"))
        return replace(case, structures={**case.structures, **found}), sources, notes

    def run(self, patient_dir: str | Path, out_dir: str | Path, force: bool = False) -> PatientResult:
        """Analyse one patient and write every output into ``out_dir`` (all or nothing).

        Args:
            patient_dir: patient folder (ct.nrrd, structures/ or a .seg.nrrd, optional dose.nrrd).
            out_dir: new or empty folder, or one holding results when ``force``.
            force: replace an output folder that holds results.
        """
        from DoseSegLib.io.outputs import staged_output

        with staged_output(out_dir, force, [patient_dir]) as staging:
            return self._process(Path(patient_dir), staging)

    def run_batch(self, patient_dirs: Sequence[str | Path], out_dir: str | Path, force: bool = False) -> BatchResult:
        """Run every patient into ``out_dir/<patient>/`` and write ``cohort_summary.csv``.

        A failing patient is logged and listed with its error; the others go on.
        """
        from tqdm import tqdm

        from DoseSegLib.io.outputs import staged_output
        from DoseSegLib.io.tables import write_csv

        folders = [Path(p) for p in patient_dirs]
        if len({p.name for p in folders}) != len(folders):
            raise DoseSegError("two patient folders share a name; their outputs would collide")
        rows, summaries = [], []
        with staged_output(out_dir, force, folders) as staging:
            for folder in tqdm(folders, desc="cohort", unit="patient", file=sys.stderr, disable=not self.progress):
                target = staging / folder.name
                try:
                    target.mkdir()
                    result = self._process(folder, target)
                except Exception as exc:  # one bad patient must not stop the cohort
                    shutil.rmtree(target, ignore_errors=True)
                    message = str(exc) if isinstance(exc, DoseSegError) else f"{type(exc).__name__}: {exc}"
                    log.debug("patient %s failed", folder, exc_info=True)
                    print(f"doseseg: error: {folder}: {message}", file=sys.stderr)
                    rows.append({"patient": folder.name, "status": "failed", "error": message})
                    continue
                rows.append(result.cohort_row())
                summaries.append(result.summary())
            write_csv(staging / "cohort_summary.csv", rows, COHORT_COLUMNS)
        return BatchResult(rows, summaries)


def _ordered(case: Case) -> dict[str, Volume]:
    """The structures with the targets first (highest prescription first), then the OARs, then the rest."""
    rank = {name: i for i, name in enumerate([*case.targets, *OARS])}
    return dict(sorted(case.structures.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def compare_doses(
    dose: Volume, case: Case, constraints: Sequence[Constraint] | None = None,
    predicted: PlanEvaluation | None = None,
) -> Comparison:
    """Predicted ``dose`` against the aligned ``case``'s reference dose, on the CT grid.

    Args:
        dose: predicted dose (Gy) on the CT grid.
        case: aligned case whose ``dose`` is the reference.
        constraints: clinical goals checked on the reference too (DoseSegLib's table when None).
        predicted: the predicted dose's evaluation when already computed.
    """
    from DoseSegLib.analysis.evaluation import score_patient

    predicted = predicted or evaluate_plan(replace(case, dose=dose), constraints=constraints)
    reference = evaluate_plan(case, constraints=constraints)
    score = score_patient(dose, case)
    differences = [
        {"structure": p["structure"], "metric": key, "reference": r[key], "predicted": value,
         "difference": value - r[key]}
        for p, r in zip(predicted.metrics, reference.metrics, strict=True)
        for key, value in p.items()
        if key not in ("structure", "prescription_gy") and key in r
    ]
    difference = dose.with_array(dose.array.astype(np.float32) - case.dose.array.astype(np.float32))
    return Comparison(case.dose, difference, score.dose_error, score.dvh_error, score.dvh_rows, differences, reference)


def write_results(result: PatientResult, folder: Path, steps: _Steps | None = None) -> None:
    """Write every output file of one patient into an existing (staging) folder, ``summary.json`` last."""
    from DoseSegLib.analysis.dvh import write_dvh_csv
    from DoseSegLib.core.colors import structure_colors
    from DoseSegLib.io.patient import write_segmentation, write_volume
    from DoseSegLib.io.tables import columns_of, write_csv
    from DoseSegLib.run.report import write_report

    steps = steps or _Steps(result.name, False)
    with steps("report"):
        write_report(folder / "report.html", result)
    with steps("write"):
        write_volume(folder / "dose.nrrd", result.dose)
        structures = result.case.structures
        write_segmentation(folder / "segmentation.seg.nrrd", structures, structure_colors(structures))
        result.plan.write(folder)
        if result.radiomics:
            write_csv(folder / "radiomics.csv", result.radiomics, columns_of(result.radiomics, ("structure",)))
        if result.comparison is not None:
            write_volume(folder / "dose_difference.nrrd", result.comparison.difference)
            write_dvh_csv(folder / "dvh_reference.csv", result.comparison.reference_plan.dvhs)
            write_csv(folder / "comparison.csv", result.comparison.metric_differences, COMPARISON_COLUMNS)
    result.timings.update(report=steps.timings["report"], write=steps.timings["write"])
    (folder / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
