"""Score predicted doses of a cohort against reference patients, as the OpenKBP challenge does."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DoseSegLib.analysis.ctcheck import check_ct
from DoseSegLib.analysis.dosecheck import check_dose_coverage, check_dose_units
from DoseSegLib.analysis.openkbp import (
    ChallengeRow,
    compare_challenge_metrics,
    dose_error,
    dvh_comparison,
    openkbp_scores,
)
from DoseSegLib.analysis.sampling import StructureDoses
from DoseSegLib.analysis.site import NOT_AN_ORGAN
from DoseSegLib.core.alignment import align_case, resample
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.listing import patient_folders
from DoseSegLib.io.patient import DOSE_FILE, POSSIBLE_DOSE_FILE, ct_source, dose_source, read_dose, read_patient
from DoseSegLib.io.tables import Row, write_csv

log = logging.getLogger(__name__)

RINGING_GY = 1.0  # predicted doses of other tools may ring slightly below 0 Gy: clipped, with a warning
PER_PATIENT_COLUMNS = ("patient", "dose_error", "dvh_error")
DVH_ERROR_COLUMNS = ("patient", "structure", "metric", "reference", "predicted", "abs_error")


@dataclass
class PatientScore:
    """One patient's dose error (Gy) and its DVH metric comparison rows."""

    patient: str
    dose_error: float
    dvh_rows: list[ChallengeRow]

    @property
    def dvh_error(self) -> float:
        """Mean absolute DVH metric error of this patient (NaN when no metric applies)."""
        errors = [row["abs_error"] for row in self.dvh_rows]
        return float(np.mean(errors)) if errors else float("nan")


@dataclass
class CohortScore:
    """The OpenKBP dose and DVH scores of a set of patients, with their details."""

    patients: list[PatientScore]
    dose_score: float
    dvh_score: float

    def per_patient_rows(self) -> list[Row]:
        return [{"patient": p.patient, "dose_error": p.dose_error, "dvh_error": p.dvh_error} for p in self.patients]

    def dvh_error_rows(self) -> list[Row]:
        return [{"patient": p.patient, **row} for p in self.patients for row in p.dvh_rows]

    def summary(self) -> str:
        """The one-line result: ``dose_score X dvh_score Y n N``."""
        return f"dose_score {self.dose_score:.4f} dvh_score {self.dvh_score:.4f} n {len(self.patients)}"


def score_patient(
    pred: Volume, reference: Case,
    shared: tuple[Mapping[str, StructureDoses], Mapping[str, StructureDoses]] | None = None,
) -> PatientScore:
    """Dose error and DVH metric errors of a predicted dose against an aligned reference case.

    Args:
        pred: predicted dose (Gy), on any grid; resampled onto the CT grid when needed.
        reference: the reference case, aligned to its CT (see ``align_case``), with dose.
        shared: the predicted and reference doses' structure samples when already gathered
            (their dose-grid voxels are read, so nothing is gathered or sorted again).
    """
    if reference.dose is None:
        raise DoseSegError(f"reference patient {reference.name}: no dose (dose.nrrd or RTDOSE)")
    ct = reference.ct
    if not pred.same_grid(ct):
        pred = resample(pred, ct, "linear", 0.0)
    pred_array, ref_array = pred.array, reference.require_dose().array
    structures = {name: mask.array for name, mask in reference.structures.items()}
    error = dose_error(pred_array, ref_array, reference.require_possible_dose_mask().array)
    targets, oars = scored_structures(reference)
    if shared is not None:
        rows = compare_challenge_metrics(*shared, ct.voxel_volume_cc, targets, oars)
    else:
        rows = dvh_comparison(pred_array, ref_array, structures, ct.voxel_volume_cc, oars, targets)
    return PatientScore(reference.name, error, rows)


def scored_structures(case: Case) -> tuple[list[str], list[str]]:
    """The structures the DVH error covers, as targets and as OARs (``doseseg evaluate`` and ``run`` alike).

    Targets: every target whose prescription is known (explicit, an RTPLAN, or a dose in its name:
    PTV1 with ``--prescription PTV1=60`` is one). OARs: every other structure but the body and
    targets of unknown dose, by its name after the name mapping (BRSTEM is Brainstem). On OpenKBP
    patients these are the challenge's ten structures, so the challenge's scores are unchanged.
    """
    targets = list(case.targets)
    oars = [name for name in case.structures if name not in case.target_names and name not in NOT_AN_ORGAN]
    return targets, oars


def _predicted_dose(pred_dir: Path, patient: str) -> Path:
    return pred_dir / patient / DOSE_FILE


def _matched_patients(pred_dir: Path, split_dir: Path, allow_missing: bool) -> list[Path]:
    if not pred_dir.is_dir():
        raise DoseSegError(f"{pred_dir}: prediction folder not found")
    patients = patient_folders(split_dir)
    missing = [p.name for p in patients if not _predicted_dose(pred_dir, p.name).is_file()]
    if missing and not allow_missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise DoseSegError(
            f"{pred_dir}: no <patient>/dose.nrrd for {len(missing)} reference patient(s): {shown} "
            f"(use --allow-missing to score the others)"
        )
    if missing:
        log.warning("%d reference patient(s) have no prediction and are left out: %s", len(missing), ", ".join(missing))
    names = {p.name for p in patients}
    extra = sorted(p.name for p in pred_dir.iterdir() if p.is_dir() and p.name not in names)
    if extra:
        log.warning("predictions without a reference patient are ignored: %s", ", ".join(extra))
    kept = [p for p in patients if p.name not in missing]
    if not kept:
        raise DoseSegError(f"{pred_dir}: no prediction matches a reference patient of {split_dir}")
    return kept


def evaluate_predictions(
    pred_dir: str | Path,
    split_dir: str | Path,
    allow_missing: bool = False,
    allow_high_dose: bool = False,
    progress: bool = False,
    mapper: NameMapper | None = None,
) -> CohortScore:
    """OpenKBP dose and DVH scores of ``pred_dir/<patient>/dose.nrrd`` against ``split_dir/<patient>/``.

    Args:
        pred_dir: folder of predicted doses, one sub-folder per patient.
        split_dir: folder of reference patients (ct.nrrd, dose.nrrd, possible_dose_mask.nrrd, structures/).
        allow_missing: score only the patients that have a prediction instead of failing.
        allow_high_dose: accept predicted doses above 200 Gy.
        progress: show a progress bar on stderr.
        mapper: structure-name mapping of the reference patients (default aliases when None).
    """
    from tqdm import tqdm

    pred_dir, split_dir = Path(pred_dir), Path(split_dir)
    scores = []
    for folder in tqdm(_matched_patients(pred_dir, split_dir, allow_missing), desc="scoring", unit="patient",
                       file=sys.stderr, disable=not progress, leave=False):
        path = _predicted_dose(pred_dir, folder.name)
        pred = read_dose(path, ringing_gy=RINGING_GY)
        check_dose_units(pred, str(path), allow_high_dose)
        original = read_patient(folder, mapper)
        check_ct(original.ct, ct_source(folder, original), strict=False)
        reference = align_case(original)
        check_dose_coverage(pred, reference.structures, str(path))
        if original.dose is not None:
            check_dose_coverage(original.dose, reference.structures, dose_source(folder, original))
        if not (folder / POSSIBLE_DOSE_FILE).is_file():
            log.warning("%s: no possible_dose_mask.nrrd; the dose score uses the body mask instead", folder)
        scores.append(score_patient(pred, reference))
    dose_score, dvh_score = openkbp_scores(
        [s.dose_error for s in scores],
        [{(r["structure"], r["metric"]): r["abs_error"] for r in s.dvh_rows} for s in scores],
    )
    return CohortScore(scores, dose_score, dvh_score)


def write_evaluation(out_dir: Path, result: CohortScore) -> None:
    """Write ``per_patient.csv`` and ``dvh_errors.csv`` into an existing folder."""
    write_csv(out_dir / "per_patient.csv", result.per_patient_rows(), PER_PATIENT_COLUMNS)
    write_csv(out_dir / "dvh_errors.csv", result.dvh_error_rows(), DVH_ERROR_COLUMNS)
