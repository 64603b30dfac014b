"""Evaluate one plan: load and check a patient's dose, then DVHs, DVH metrics and clinical goals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from DoseSegLib.analysis.constraints import (
    Constraint,
    evaluate_constraints,
    load_constraints,
    v_doses,
    write_constraints_csv,
)
from DoseSegLib.analysis.dosecheck import check_dose_coverage, check_dose_units
from DoseSegLib.analysis.dvh import DVH, dvhs_of, metrics_rows, write_dvh_csv, write_metrics_csv
from DoseSegLib.analysis.sampling import StructureDoses, gather_doses
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.options import DvhMethod
from DoseSegLib.io.patient import dose_source, read_dose, read_patient
from DoseSegLib.io.tables import Row

__all__ = ["PlanEvaluation", "evaluate_plan", "load_plan"]


def load_plan(
    patient: str | Path,
    dose: str | Path | None = None,
    mapper: NameMapper | None = None,
    segmentation: str | Path | None = None,
    allow_high_dose: bool = False,
    series: str | None = None,
) -> Case:
    """A patient with its dose, checked (Gy, covers the structures) and aligned onto the CT grid.

    Args:
        patient: patient folder (ct.nrrd, structures/ or a .seg.nrrd, optional dose.nrrd).
        dose: a dose NRRD to use instead of the folder's dose.nrrd.
        mapper: structure-name mapping.
        segmentation: a .seg.nrrd to use instead of structures/.
        allow_high_dose: accept a dose above 200 Gy.
        series: a DICOM folder's CT series (SeriesInstanceUID), when it holds several.
    """
    case = read_patient(patient, mapper, segmentation, series)
    source = str(dose) if dose is not None else dose_source(Path(patient), case)  # a DICOM folder's: its RTDOSE
    if dose is not None:
        case = replace(case, dose=read_dose(dose))
    if case.dose is None:
        raise DoseSegError(f"{patient}: no dose ({'RTDOSE' if case.dicom_series else 'dose.nrrd'}) in the patient "
                           "folder and no dose file given")
    if not case.structures:
        raise DoseSegError(f"{patient}: no structure found")
    check_dose_units(case.dose, source, allow_high_dose)
    aligned = align_case(case)
    check_dose_coverage(case.dose, aligned.structures)
    return aligned


@dataclass
class PlanEvaluation:
    """DVHs, one row of DVH metrics per structure and one row per clinical-goal check, all read
    from ``doses``: each structure's dose samples, gathered once."""

    dvhs: dict[str, DVH]
    metrics: list[Row]
    constraints: list[Row]
    doses: dict[str, StructureDoses]
    method: DvhMethod = DvhMethod.AUTO

    def write(self, folder: Path) -> None:
        """Write dvh.csv, dvh_metrics.csv and constraints.csv into an existing folder."""
        write_dvh_csv(folder / "dvh.csv", self.dvhs)
        write_metrics_csv(folder / "dvh_metrics.csv", self.metrics)
        write_constraints_csv(folder / "constraints.csv", self.constraints)

    def counts(self) -> dict[str, int]:
        """How many goal checks passed, failed or were not evaluated."""
        counts: dict[str, int] = {}
        for row in self.constraints:
            counts[str(row["result"])] = counts.get(str(row["result"]), 0) + 1
        return counts


def evaluate_plan(
    case: Case,
    step_gy: float = 0.1,
    v_gy: Sequence[float] = (),
    constraints: Sequence[Constraint] | None = None,
    dvh_method: DvhMethod | str = DvhMethod.AUTO,
) -> PlanEvaluation:
    """DVHs, metrics (with HI and Paddick CI of the targets) and clinical goals of an aligned case.

    Args:
        case: a case on the CT grid with a dose (see ``load_plan``); its possible-dose mask
            (or body mask) bounds the prescription isodose volume.
        step_gy: DVH dose bin width.
        v_gy: doses x for which to report V_x, besides those the goals need.
        constraints: clinical goals; DoseSegLib's default table when None.
        dvh_method: ``auto`` (partial volume: structures on their own finer grids, small ones
            oversampled) or ``voxel`` (dose-grid voxels); see ``analysis.sampling``.
    """
    dvh_method = DvhMethod.parse(dvh_method)
    if case.dose is None:
        raise DoseSegError(f"{case.name}: no dose to evaluate")
    constraints = load_constraints() if constraints is None else constraints
    doses = sorted(set(v_gy) | set(v_doses(constraints)))
    gathered = gather_doses(case.dose, case.structures, case.fine_structures, dvh_method)
    dvhs = dvhs_of(gathered, step_gy)
    metrics = metrics_rows(gathered, case.dose, case.targets, case.possible_dose_mask, doses, case.structures,
                           case.original_names)
    # each target against its own known prescription only: a target of unknown dose is never graded
    checks = evaluate_constraints(metrics, constraints, case.targets)
    return PlanEvaluation(dvhs, metrics, checks, gathered, dvh_method)
