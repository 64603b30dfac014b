"""The main job: read and align a patient, segment missing OARs, predict the dose, analyse, compare, report.

From Python::

    from DoseSegLib import Pipeline
    result = Pipeline(device="auto").run("pt_201", "pt_201_results")
    print(result.comparison.dose_error if result.comparison else result.metrics[0])
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from DoseSegLib.analysis.constraints import load_constraints, set_aside
from DoseSegLib.analysis.plan import PlanEvaluation, evaluate_plan
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.checks import named_path, require_path, require_paths
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.memory import huge_pages_off
from DoseSegLib.core.options import Device, StructureSource
from DoseSegLib.core.volume import Volume
from DoseSegLib.run.anonymise import REFERENCE, SOURCE, PatientIdentity, anonymise_result, identify
from DoseSegLib.run.compare import compare_doses
from DoseSegLib.run.results import (
    COHORT_COLUMNS, BatchResult, Comparison, PatientResult, RunOptions, check_run_options,
)
from DoseSegLib.run.steps import ANALYSIS_STEPS, STEPS, Steps
from DoseSegLib.run.trust import TrustChecks, collect_warnings
from DoseSegLib.run.writer import write_results

if TYPE_CHECKING:
    from DoseSegLib.analysis.applicability import Applicability
    from DoseSegLib.models.common.catalogue import ModelEntry
    from DoseSegLib.models.dose.uncertainty import DoseUncertainty
    from DoseSegLib.models.seg.predict import SegModel

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)


class Pipeline:
    """The main job with its models loaded once (reuse one Pipeline for many patients).

    Args:
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        options: what to do besides the dose (see :class:`RunOptions`).
        dose_model: catalogue name of the dose model (default: the catalogue's default).
        progress: show progress bars on stderr.
        log_lines: in a cohort, write one line per patient (with the time left) to stderr: for logs.
    """

    def __init__(
        self, device: Device | str = Device.AUTO, options: RunOptions | None = None, dose_model: str | None = None,
        progress: bool = False, log_lines: bool = False,
    ) -> None:
        from DoseSegLib.models.dose.predict import load_dose_model

        start = time.perf_counter()
        device = Device.parse(device)
        self.options = check_run_options(RunOptions() if options is None else options)
        self.progress, self.log_lines = progress, log_lines
        self.constraints = load_constraints(self.options.constraints)
        self.dose_model = load_dose_model(dose_model, device)
        if self.options.uncertainty:
            from DoseSegLib.models.dose.uncertainty import check_uncertainty

            check_uncertainty(self.dose_model, self.options.level)
        self.segmenter, self.segmenter_note = self._load_segmenter(device)
        self.trust = TrustChecks.load(self.dose_model, device)
        from DoseSegLib.models.dose.uncertainty import load_difficulty

        self.difficulty = load_difficulty(self.dose_model)
        self.load_seconds = time.perf_counter() - start

    def _load_segmenter(self, device: Device) -> tuple[SegModel | None, str]:
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
        models = {"dose": _describe(self.dose_model.entry)}
        if self.segmenter is not None:
            models["segmentation"] = _describe(self.segmenter.entry)
        return models

    def analyse(self, patient_dir: str | Path) -> PatientResult:
        """Run every step on one patient folder and return the results without writing anything."""
        return self._process(named_path(require_path(patient_dir, "Pipeline.analyse patient_dir")), None)

    def _process(self, folder: Path, out: Path | None, source_label: str = "",
                 reference_label: str = "", who: PatientIdentity | None = None) -> PatientResult:
        """Analyse ``folder`` and, when ``out`` is given, write the results there; with the options'
        de-identifier, every output names the patient by ``who`` (found from ``folder`` when None)."""
        steps = Steps(folder.name, self.progress, STEPS if out is not None else ANALYSIS_STEPS)
        deid = self.options.deidentifier
        if who is None and deid is not None:
            who = identify(deid, folder, self.options.series)
        try:
            with contextlib.ExitStack() as scope:  # what _analyse sets up for the patient, until it is written
                warnings = scope.enter_context(collect_warnings([]))
                result = self._analyse(folder, steps, scope)  # on the case as read, whether anonymised or not
                result.warnings = warnings
                result.timings = {"load models": self.load_seconds, **steps.timings}
                result.source_label = source_label
                result.reference_label = reference_label
                if who is not None:  # the name, structures and source are the pseudonym's; notes and warnings cleaned
                    result, who = anonymise_result(result, who)
                    result.redact, result.source_label = who.text, SOURCE
                    result.reference_label = (who.text(reference_label) if reference_label
                                              else REFERENCE[bool(result.case.dicom_series)])
                if out is not None:
                    write_results(result, out, steps, self.options.deidentifier)
        finally:
            steps.close()
        return result

    def _analyse(self, folder: Path, steps: Steps, scope: contextlib.ExitStack) -> PatientResult:
        from DoseSegLib.analysis.ctcheck import check_ct
        from DoseSegLib.analysis.dosecheck import check_dose_coverage, check_dose_units, dose_coverage, usable_reference
        from DoseSegLib.analysis.plan_qa import COVERAGE_TOLERANCE
        from DoseSegLib.analysis.site import check_site
        from DoseSegLib.core.alignment import align_case
        from DoseSegLib.io.patient import ct_source, dose_source, read_patient
        from DoseSegLib.models.dose.predict import predict_case_dose

        with steps("read"):
            case = read_patient(folder, self.options.mapper(), series=self.options.series)
            check_ct(case.ct, ct_source(folder, case))
            model = self.dose_model  # a clinic's model knows its own site's organs
            site_note = check_site(case, self.options.any_site, model.oars if model.site else None, model.site)
            case = replace(case, notes=[*case.notes, site_note]) if site_note else case
            if case.dose is not None:
                check_dose_units(case.dose, dose_source(folder, case), self.options.allow_high_dose)
        scope.enter_context(huge_pages_off(case.ct.array.size))  # see DoseSegLib.core.memory
        with steps("align"):
            reference = case.dose
            case = align_case(case)
            if reference is not None:  # warns of the patient's structures the plan dose's grid leaves out
                check_dose_coverage(reference, case.structures, dose_source(folder, case))
                if not usable_reference(case, dose_source(folder, case)):
                    case, reference = replace(case, dose=None), None
        with steps("segment"):
            case, sources, segment_notes = self._segment(case)
            notes = [*case.notes, *segment_notes, *self.trust.notes]
            case = replace(case, structures=_ordered(case))
            if (unprescribed := case.unprescribed_warning()) is not None:
                log.warning(unprescribed)
        provenance: dict = {}
        with self._start_radiomics(case, notes, provenance) as radiomics_job:  # under way from here on
            with steps("predict dose"):
                dose = predict_case_dose(self.dose_model, case, tta=self.options.tta)
                auto = [name for name, source in sources.items() if source == StructureSource.AUTO]
                dose, applicability, normalisation, unscaled = self.trust.checked(
                    case, dose, self.options.normalise, self.options.dvh_method, auto)
                if not self.options.normalise:  # a note; why a normalisation was abandoned is a warning (logged)
                    notes.append(unscaled)
                implausible = {name: why for name, why in (applicability.implausible if applicability else {}).items()
                               if name in auto}  # auto-contours unlike the training ones: judged nowhere
            with steps("DVH and goals"):
                plan = evaluate_plan(replace(case, dose=dose), constraints=self.constraints,
                                     dvh_method=self.options.dvh_method)
                plan.constraints = set_aside(plan.constraints, {
                    name: f"not evaluated: auto-contour unlike the training contours ({why})"
                    for name, why in implausible.items()})
                uncertainty = self._uncertainty(case, plan, applicability is not None and
                                                not applicability.in_distribution)
            with steps("compare"):
                drawn = {n: m for n, m in case.structures.items() if m.array.any()}  # measured once, auto-contours in
                coverage = dose_coverage(reference, drawn) if reference is not None else {}
                comparison = (compare_doses(dose, case, self.constraints, plan, reference, not_covered=[
                    name for name, covered in coverage.items() if covered < 1 - COVERAGE_TOLERANCE])
                              if case.dose is not None else None)
                plan_qa = [r for r in self._plan_qa(case, plan, comparison, applicability, coverage)
                           if r["structure"] not in implausible]
            with steps("radiomics"):  # what is left to wait for
                radiomics = radiomics_job.result() if radiomics_job is not None else []
        return PatientResult(case.name, folder, case, dose, plan, radiomics, comparison, sources, notes,
                             self.models, str(self.dose_model.device), radiomics_provenance=provenance,
                             uncertainty=uncertainty, applicability=applicability, normalisation=normalisation,
                             plan_qa=plan_qa, plan_qa_level=self.options.level)

    def _plan_qa(self, case: Case, plan: PlanEvaluation, comparison: Comparison | None,
                 applicability: Applicability | None, coverage: Mapping[str, float]) -> list[dict]:
        """With a plan dose: its interval metrics against the prediction's calibrated intervals (plan_qa.csv),
        each noted when the interval is not calibrated for it (outside the domain, an organ the model lacks),
        not evaluated where the plan dose's grid leaves part of the graded structure out (``coverage``: the
        fraction of each structure inside it, measured after segmentation, auto-contours included)."""
        if comparison is None or self.difficulty is None or not case.targets:
            return []
        from DoseSegLib.analysis.plan_qa import plan_qa_rows
        from DoseSegLib.models.dose.uncertainty import case_intervals

        intervals = case_intervals(self.difficulty, case, plan, self.options.level)
        outside = applicability is not None and not applicability.in_distribution
        known = {*self.dose_model.oars, *case.targets}
        return plan_qa_rows(intervals, comparison.reference_plan.metrics, coverage, outside, known)

    def _uncertainty(self, case: Case, plan: PlanEvaluation, outside_domain: bool) -> DoseUncertainty | None:
        """With ``options.uncertainty``: the calibrated intervals (widened by the samples' spread for a case
        outside the model's domain), and goals straddling their limit marked uncertain."""
        if not self.options.uncertainty:
            return None
        from DoseSegLib.analysis.intervals import mark_uncertain
        from DoseSegLib.models.dose.uncertainty import predict_uncertainty

        uncertainty = predict_uncertainty(self.dose_model, case, plan, self.options.level, self.options.dvh_method,
                                          outside_domain=outside_domain)
        plan.constraints = mark_uncertain(plan.constraints, uncertainty.intervals)
        return uncertainty

    def _start_radiomics(self, case: Case, notes: list[str], provenance: dict) -> contextlib.AbstractContextManager:
        """The structures' radiomics under way (in worker processes on clinical-size CTs, so that
        they run beside the dose prediction), or None with ``--no-radiomics``."""
        if not self.options.radiomics:
            notes.append("radiomics skipped (--no-radiomics)")
            return contextlib.nullcontext()
        from DoseSegLib.analysis.radiomics import start_radiomics

        return start_radiomics(case.ct, case.structures, provenance=provenance, workers=None)

    def _segment(self, case: Case) -> tuple[Case, dict[str, StructureSource], list[str]]:
        """The case with auto-segmented OARs added, each structure's source, and notes."""
        sources = dict.fromkeys(case.structures, StructureSource.PATIENT)
        organs = self.dose_model.oars  # a clinic's model: its own site's organs, not the bundled ones
        wanted = list(organs) if self.options.segment_all else [n for n in organs if n not in case.structures]
        if not wanted:
            return case, sources, []
        if self.segmenter is None:
            return case, sources, [f"{self.segmenter_note} (OARs not contoured: {', '.join(wanted)})"]
        unknown = [name for name in wanted if name not in self.segmenter.labels]
        if unknown:
            log.warning("the segmentation model %s does not contour %s: not auto-segmented",
                        _describe(self.segmenter.entry)["name"], ", ".join(unknown))
            wanted = [name for name in wanted if name not in unknown]
        if not wanted:
            return case, sources, []
        from DoseSegLib.models.seg.predict import segment_case

        masks = segment_case(self.segmenter, case, tta=self.options.tta)
        found = {name: masks[name] for name in wanted if name in masks and masks[name].array.any()}
        notes = [f"auto-segmented: {', '.join(found)}"] if found else []
        missing = [name for name in wanted if name not in found]
        if missing:
            notes.append(f"the segmentation model found no {', '.join(missing)}")
        sources.update(dict.fromkeys(found, StructureSource.AUTO))
        fine = {name: mask for name, mask in case.fine_structures.items() if name not in found}
        names = {name: text for name, text in case.original_names.items() if name not in found}
        return replace(case, structures={**case.structures, **found}, fine_structures=fine,
                       original_names=names), sources, notes

    def run(self, patient_dir: str | Path, out_dir: str | Path, force: bool = False,
            source_label: str = "", reference_label: str = "") -> PatientResult:
        """Analyse one patient and write every output into ``out_dir`` (all or nothing).

        Args:
            patient_dir: patient folder (ct.nrrd, structures/ or a .seg.nrrd, optional dose.nrrd).
            out_dir: new or empty folder, or one holding results when ``force``.
            force: replace an output folder that holds results.
            source_label: how summary.json and the report name the input (default: its folder).
            reference_label: what the folder's dose.nrrd is, in words (default: the patient's planned dose).
        """
        from DoseSegLib.io.outputs import staged_output

        folder = named_path(require_path(patient_dir, "Pipeline.run patient_dir"))  # "." named by its folder
        out = require_path(out_dir, "Pipeline.run out_dir")
        with staged_output(out, bool(force), [folder]) as staging:
            return self._process(folder, staging, str(source_label or ""), str(reference_label or ""))

    def run_batch(self, patient_dirs: Sequence[str | Path], out_dir: str | Path, force: bool = False) -> BatchResult:
        """Run every patient into ``out_dir/<patient>/`` and write ``cohort_summary.csv``.

        A failing patient is logged and listed with its error; the others go on.
        """
        from DoseSegLib.io.outputs import staged_output
        from DoseSegLib.io.tables import write_csv
        from DoseSegLib.run.steps import CohortProgress

        folders = [named_path(p) for p in require_paths(patient_dirs, "Pipeline.run_batch patient_dirs")]
        out_dir = require_path(out_dir, "Pipeline.run_batch out_dir")
        if len({p.name for p in folders}) != len(folders):
            raise DoseSegError("two patient folders share a name; their outputs would collide")
        rows, summaries = [], []
        progress = CohortProgress(len(folders), self.progress, self.log_lines)
        deid = self.options.deidentifier
        with staged_output(out_dir, force, folders) as staging, contextlib.closing(progress):
            for folder in folders:
                who = identify(deid, folder, self.options.series) if deid is not None else None
                name = folder.name if who is None else who.pseudonym  # --anonymise: the folder of the pseudonym
                target = staging / name
                try:
                    if who is not None and target.exists():
                        raise _SamePatient(f"another folder of this cohort has the same pseudonym {name} (the same "
                                           "patient): run each of its folders on its own")
                    target.mkdir()
                    result = self._process(folder, target, who=who)
                except Exception as exc:  # one bad patient must not stop the cohort
                    if not isinstance(exc, _SamePatient):  # that folder is the other patient's
                        shutil.rmtree(target, ignore_errors=True)
                    message = str(exc) if isinstance(exc, DoseSegError) else f"{type(exc).__name__}: {exc}"
                    log.debug("patient %s failed", folder, exc_info=True)
                    print(f"doseseg: error: {folder}: {message}", file=sys.stderr)
                    error = message if who is None else who.text(message)
                    rows.append({"patient": name, "status": "failed", "error": error})
                    progress.patient_done(folder.name, "failed")
                    continue
                if who is not None:  # the console may name the input: where its de-identified outputs go
                    print(f"doseseg: {folder}: de-identified outputs in {out_dir / name}", file=sys.stderr)
                rows.append(result.cohort_row())
                summaries.append(result.summary())
                progress.patient_done(folder.name, "done")
            write_csv(staging / "cohort_summary.csv", rows, COHORT_COLUMNS)
        return BatchResult(rows, summaries)


class _SamePatient(DoseSegError):
    """A second folder of one patient in an anonymised cohort: its outputs would take the first one's folder."""


def _ordered(case: Case) -> dict[str, Volume]:
    """The structures with the targets first (highest prescription first), then the OARs, then the rest."""
    rank = {name: i for i, name in enumerate([*case.targets, *OARS])}
    return dict(sorted(case.structures.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _describe(entry: ModelEntry | None) -> dict:
    """A model's name, version and sha256 for the outputs (the Pipeline's models come from the catalogue)."""
    return entry.describe() if entry is not None else {"name": None}
