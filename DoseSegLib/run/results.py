"""What the main job produces: its options, per-patient and cohort results, and the table of output files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from DoseSegLib.analysis.dvh import DVH
from DoseSegLib.analysis.openkbp import ChallengeRow
from DoseSegLib.analysis.plan_qa import VERDICTS as PLAN_QA_VERDICTS
from DoseSegLib.analysis.plan import PlanEvaluation
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.options import DvhMethod, StructureSource
from DoseSegLib.core.version import __version__
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.tables import Row

if TYPE_CHECKING:
    from DoseSegLib.analysis.applicability import Applicability
    from DoseSegLib.analysis.normalisation import Normalisation
    from DoseSegLib.io.dicom.deid import Deidentifier
    from DoseSegLib.models.dose.uncertainty import DoseUncertainty

__all__ = [
    "COHORT_COLUMNS",
    "COMPARISON_COLUMNS",
    "OUTPUT_FILES",
    "BatchResult",
    "Comparison",
    "OutputFile",
    "PatientResult",
    "RunOptions",
    "check_run_options",
    "constraint_text",
    "output_files"
]

COHORT_COLUMNS = (
    "patient", "status", "error", "prescription_gy", "structures", "auto_segmented",
    "constraints_failed", "dose_error_gy", "dvh_error_gy", "seconds",
)
COMPARISON_COLUMNS = ("structure", "metric", "reference", "predicted", "difference")
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
        dvh_method: ``auto`` (partial volume) or ``voxel`` (dose-grid voxels); see ``analysis.sampling``.
        series: the CT series (SeriesInstanceUID) of a DICOM patient folder holding several.
        names: structure-name mapping (e.g. ``NameMapper({"Stem": "Brainstem"})``; default aliases when None).
        prescriptions: target doses in Gy (e.g. ``{"PTV_High": 70}``), overriding a dose in the name.
        any_site: run the head-and-neck models on a patient of another site (recorded in the notes).
        uncertainty: sample the dose model and give calibrated DVH intervals (dose_std.nrrd,
            dvh_intervals.csv); a goal whose interval straddles its limit becomes "uncertain".
        level: the intervals' coverage (a fraction).
        normalise: scale the predicted dose so that the primary target meets its prescription by the
            convention of the model's training plans (``<model>.prescription.json``).
        deidentifier: de-identify every output: the DICOM objects (rtdose.dcm, rtstruct.dcm, seg.dcm) per
            PS3.15's Basic Profile (``io.dicom.deid``), and the NRRD, CSV, HTML and JSON files, a cohort's
            per-patient folders and cohort_summary.csv (``run.anonymise``): the patient is named by the keyed
            pseudonym its DICOM objects carry, no input path is written, and the patient's name and ID parts
            and folder name are replaced in structure names and free text.
    """

    segment: bool = True
    segment_all: bool = False
    radiomics: bool = True
    constraints: str | Path | None = None
    tta: bool = False
    allow_high_dose: bool = False
    dvh_method: DvhMethod = DvhMethod.AUTO
    series: str | None = None
    uncertainty: bool = False
    level: float = 0.9
    names: NameMapper | None = None
    prescriptions: dict[str, float] | None = None
    any_site: bool = False
    normalise: bool = True
    deidentifier: Deidentifier | None = None

    def __post_init__(self) -> None:
        self.dvh_method = DvhMethod.parse(self.dvh_method)

    def mapper(self) -> NameMapper:
        """The name mapping with the explicit prescriptions."""
        return (self.names or NameMapper()).with_prescriptions(self.prescriptions or {})


def check_run_options(options: object) -> RunOptions:
    """``options`` when it is a usable RunOptions; a DoseSegError naming the first bad field otherwise."""
    from DoseSegLib.core.checks import require_path, require_type

    require_type(options, RunOptions, "Pipeline options")
    assert isinstance(options, RunOptions)
    flags = ("segment", "segment_all", "radiomics", "tta", "allow_high_dose", "uncertainty", "any_site", "normalise")
    for flag in flags:
        require_type(getattr(options, flag), bool, f"RunOptions.{flag}")
    options.dvh_method = DvhMethod.parse(options.dvh_method)
    if options.constraints is not None:
        require_path(options.constraints, "RunOptions.constraints")
    if options.series is not None:
        require_type(options.series, str, "RunOptions.series")
    require_type(options.level, (float, int), "RunOptions.level")
    if not 0 < float(options.level) < 1:
        raise DoseSegError(f"RunOptions.level: {options.level} is not a coverage between 0 and 1 (e.g. 0.9)")
    if options.names is not None:
        require_type(options.names, NameMapper, "RunOptions.names")
    if options.prescriptions is not None:
        require_type(options.prescriptions, dict, "RunOptions.prescriptions")
    options.mapper()  # every prescription from 1 to 120 Gy
    return options


@dataclass
class Comparison:
    """The predicted dose against the patient's reference (planned) dose.

    Attributes:
        reference_dose: the reference dose on the CT grid (Gy).
        difference: predicted minus reference (Gy).
        dose_error: OpenKBP dose error (Gy).
        dvh_error: mean absolute OpenKBP DVH metric error (Gy), as ``doseseg evaluate`` gives it.
        openkbp_rows: structure, metric, reference, predicted, abs_error of the challenge metrics
            (``dvh_errors.csv``, the rows of ``evaluate``'s file of that name).
        metric_differences: structure, metric, reference, predicted, difference of every DVH metric.
        reference_plan: DVHs, metrics and clinical goals of the reference dose.
        gamma: global gamma pass rates (3%/3 mm, 2%/2 mm) in the body, rows of ``gamma.csv``.
        not_covered: structures more than 1 % outside the reference dose's grid (its dose 0 Gy there): not in
            ``dvh_error``, ``openkbp_rows`` or ``metric_differences``.
    """

    reference_dose: Volume
    difference: Volume
    dose_error: float
    dvh_error: float
    openkbp_rows: list[ChallengeRow]
    metric_differences: list[Row]
    reference_plan: PlanEvaluation
    gamma: list[Row] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)

    @property
    def dvh_error_structures(self) -> list[str]:
        """The structures ``dvh_error`` covers (those of ``dvh_errors.csv``), in order."""
        return list(dict.fromkeys(row["structure"] for row in self.openkbp_rows))


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
    structure_sources: dict[str, StructureSource]
    notes: list[str]
    models: dict[str, dict]
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    source_label: str = ""
    reference_label: str = ""  # what the reference dose is, when the folder does not say (e.g. the demo's)
    radiomics_provenance: dict = field(default_factory=dict)
    uncertainty: DoseUncertainty | None = None
    applicability: Applicability | None = None
    normalisation: Normalisation | None = None
    warnings: list[str] = field(default_factory=list)
    plan_qa: list[Row] = field(default_factory=list)
    plan_qa_level: float = 0.9
    redact: Callable[[str], str] | None = None  # with --anonymise: cleans the warnings (``run.anonymise``)

    @property
    def origin(self) -> str:
        """How the outputs name the input: its label when given (e.g. the demo's phantom), else its folder."""
        return self.source_label or str(self.source)

    @property
    def reference_text(self) -> str:
        """What the comparison's reference dose is, in words: its file and what it stands for."""
        if self.reference_label:
            return self.reference_label
        if self.case.dicom_series:
            return f"the RTDOSE of {self.origin} (the patient's planned dose)"
        return f"{self.source / 'dose.nrrd'} (the dose in the patient folder, taken as the planned dose)"

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
        return [name for name, source in self.structure_sources.items() if source == StructureSource.AUTO]

    def summary(self) -> dict:
        """A JSON-serialisable digest (what ``summary.json`` holds)."""
        comparison = None
        if self.comparison is not None:
            comparison = {"dose_error_gy": self.comparison.dose_error, "dvh_error_gy": self.comparison.dvh_error,
                          "dvh_error_structures": self.comparison.dvh_error_structures,
                          "not_covered": self.comparison.not_covered,
                          "gamma_pass_rate_pct": {r["criterion"]: r["pass_rate_pct"] for r in self.comparison.gamma}}
        return {
            "patient": self.name,
            "source": self.origin,
            "doseseg_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": self.device,
            "prescription_gy": self.case.main_prescription,
            "targets": self.case.targets,
            "targets_unknown_dose": self.case.unknown_targets,
            "structures": {name: self.structure_sources[name] for name in self.case.structures},
            "original_names": self.case.original_names,
            "notes": self.notes,
            "applicability": self.applicability.to_dict() if self.applicability is not None else None,
            "normalisation": self.normalisation.to_dict() if self.normalisation is not None else None,
            "warnings": self.all_warnings,
            "models": self.models,
            "constraints": self.plan.counts(),
            "failed_constraints": [constraint_text(row) for row in self.constraints if row["result"] == "fail"],
            "comparison": comparison,
            "plan_qa": {verdict: sum(r["verdict"] == verdict for r in self.plan_qa)
                        for verdict in PLAN_QA_VERDICTS} if self.plan_qa else None,
            "reference": self.reference_text if self.comparison is not None else None,
            "timings_s": {step: round(seconds, 3) for step, seconds in self.timings.items()},
            "patient_seconds": round(self.seconds, 3),
        }

    @property
    def all_warnings(self) -> list[str]:
        """What the user must know: outside the model's domain, implausible auto-contours, logged warnings."""
        out = []
        if self.applicability is not None and not self.applicability.in_distribution:
            out.append("outside the model's domain: " + "; ".join(self.applicability.reasons))
        if self.applicability is not None:
            out += [f"auto-contoured {name} unlike the training contours, its goals not evaluated: {why}"
                    for name, why in self.applicability.implausible.items() if name in self.auto_segmented]
        out += [w for w in self.warnings if w not in out]
        return out if self.redact is None else list(dict.fromkeys(map(self.redact, out)))

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


def constraint_text(row: Row) -> str:
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


@dataclass(frozen=True)
class OutputFile:
    """One file of a patient's output folder: its name, what it holds, and when it is written.

    ``needs`` says when: always, with a reference dose, with radiomics, for a DICOM patient (with auto OARs).
    """

    name: str
    content: str
    # "", "comparison", "radiomics", "uncertainty", "plan_qa", "dicom" (a DICOM patient),
    # "dicom_auto" (... with auto OARs)
    needs: str = ""


OUTPUT_FILES = (
    OutputFile("report.html", "this report"),
    OutputFile("dose.nrrd", "predicted dose (Gy) on the CT grid, cropped to its non-zero box"),
    OutputFile("segmentation.seg.nrrd", "the structures used, for 3D Slicer (cropped to their extent)"),
    OutputFile("dvh.csv", "cumulative DVH of every structure"),
    OutputFile("dvh_metrics.csv", "all DVH metrics, TG-263 names (D98%[Gy], D1%[Gy], D0.03cc[Gy], V_x ...)"),
    OutputFile("constraints.csv", "clinical goals, pass or fail"),
    OutputFile("dose_std.nrrd", "standard deviation of the sampled doses (Gy)", "uncertainty"),
    OutputFile("dvh_intervals.csv", "calibrated interval of each OAR mean and near-max, target D95% and D2%",
               "uncertainty"),
    OutputFile("radiomics.csv", "pyradiomics features on the CT", "radiomics"),
    OutputFile("radiomics.json", "pyradiomics version, settings and diagnostics of radiomics.csv", "radiomics"),
    OutputFile("plan_qa.csv", "the plan's OAR mean and near-max, target D95% and D2% against the prediction's "
               "calibrated interval: within, above or below achievable", "plan_qa"),
    OutputFile("dose_difference.nrrd", "predicted minus reference dose (Gy)", "comparison"),
    OutputFile("comparison.csv", "every DVH metric, predicted vs reference", "comparison"),
    OutputFile("dvh_errors.csv", "the OpenKBP DVH metrics' errors (their mean: the DVH error), as doseseg "
               "evaluate's dvh_errors.csv", "comparison"),
    OutputFile("dvh_reference.csv", "DVH of the reference dose", "comparison"),
    OutputFile("gamma.csv", "gamma pass rates, predicted vs reference dose", "comparison"),
    OutputFile("rtdose.dcm", "the predicted dose as DICOM RTDOSE in the CT's frame", "dicom"),
    OutputFile("rtstruct.dcm", "the auto-segmented OARs as DICOM RTSTRUCT", "dicom_auto"),
    OutputFile("seg.dcm", "the auto-segmented OARs as DICOM SEG (highdicom)", "dicom_seg"),
    OutputFile("summary.json", "this run in machine-readable form"),
)


def output_files(result: PatientResult) -> list[OutputFile]:
    """The entries of :data:`OUTPUT_FILES` that ``result`` has, in writing order."""
    from DoseSegLib.io.dicom.seg import seg_available

    dicom = bool(result.case.dicom_series)
    present = {"": True, "comparison": result.comparison is not None, "radiomics": bool(result.radiomics),
               "uncertainty": result.uncertainty is not None, "plan_qa": bool(result.plan_qa), "dicom": dicom,
               "dicom_auto": dicom and bool(result.auto_segmented),
               "dicom_seg": dicom and bool(result.auto_segmented) and seg_available()}
    return [entry for entry in OUTPUT_FILES if present[entry.needs]]
