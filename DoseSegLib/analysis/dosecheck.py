"""Sanity checks on a dose before it is analysed: units (Gy, not cGy) and coverage of the structures."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from DoseSegLib.core.alignment import body_mask, outside_fraction
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

__all__ = ["MAX_PLAUSIBLE_GY", "OUTSIDE_GY", "PLAUSIBLE_PEAK", "check_dose_coverage", "check_dose_units",
    "check_predicted_dose", "dose_coverage", "usable_reference"
]

log = logging.getLogger(__name__)

MAX_PLAUSIBLE_GY = 200.0


def check_dose_units(dose: Volume, source: str = "dose", allow_high_dose: bool = False) -> None:
    """Refuse a dose whose maximum exceeds 200 Gy: almost surely cGy read as Gy.

    Args:
        dose: the dose volume.
        source: what to call it in the message (e.g. its file).
        allow_high_dose: accept it anyway.
    """
    peak = float(dose.array.max()) if dose.array.size else 0.0
    if peak > MAX_PLAUSIBLE_GY and not allow_high_dose:
        raise DoseSegError(
            f"{source}: maximum dose {peak:.4g} Gy is implausible; is it in cGy? "
            f"(divide by 100, or pass --allow-high-dose to accept it)"
        )


def dose_coverage(dose: Volume, structures: Mapping[str, Volume]) -> dict[str, float]:
    """Fraction of each structure's voxels that lie inside the dose grid's extent.

    Args:
        dose: the dose on its own grid (before alignment).
        structures: boolean masks, all on one grid (e.g. the CT's).
    """
    if not structures:
        return {}
    grid = next(iter(structures.values()))
    coverage = {}
    for name, mask in structures.items():
        if not mask.same_grid(grid):
            raise DoseSegError(f"structure '{name}' is not on the grid of the other structures: align them first")
        coverage[name] = 1.0 - outside_fraction(mask, dose) if mask.array.any() else 0.0
    return coverage


def check_dose_coverage(dose: Volume, structures: Mapping[str, Volume], source: str = "dose") -> dict[str, float]:
    """Warn, naming each structure, when part of it lies outside the dose grid (its dose counts as 0 there).

    Raises DoseSegError when no structure overlaps the dose at all (wrong dose file or geometry).

    Args:
        dose: the dose on its own grid (before alignment).
        structures: boolean masks, all on one grid (e.g. the CT's).
        source: what to call the dose in the messages (e.g. its file).

    Returns:
        The fraction of each structure inside the dose grid.
    """
    coverage = dose_coverage(dose, structures)
    if coverage and max(coverage.values()) == 0:
        raise DoseSegError(f"{source}: the dose grid covers none of the structures: wrong dose file or geometry? "
                           "(check the dose's origin and direction against the CT's)")
    for name, fraction in coverage.items():
        if fraction < 1:
            log.warning(
                "%s: structure '%s': %.1f%% of its voxels lie outside the dose grid (dose taken as 0 Gy there)",
                source, name, 100 * (1 - fraction),
            )
    return coverage


def usable_reference(case: Case, source: str = "dose") -> bool:
    """Whether the aligned ``case``'s plan dose can be compared with: False, with a warning naming ``source``,
    when it is zero inside the body (the possible-dose mask): all zeros, or dose only outside the body.

    Args:
        case: an aligned case (its dose and possible-dose mask on the CT grid).
        source: what to call the dose in the warning (e.g. its file).
    """
    dose = case.require_dose()
    body = case.require_possible_dose_mask().array.astype(bool, copy=False)
    if float(np.max(dose.array, where=body, initial=0.0)) > 0:
        return True
    where = "everywhere" if not dose.array.any() else "inside the body"
    log.warning("%s: the plan dose is zero %s: the prediction is not compared with it (no comparison, no plan QA)",
                source, where)
    return False


PLAUSIBLE_PEAK = 1.3  # a predicted maximum above this times the highest prescription is not a plausible plan
OUTSIDE_GY = 0.01  # the most dose allowed outside the body (the possible-dose mask, else the CT's body)


def check_predicted_dose(dose: Volume, case: Case) -> None:
    """Refuse a predicted dose no plan would deliver, before anything is written.

    No voxel may exceed 1.3 times the highest prescription (measured on 33 OpenKBP validation
    patients: at most 1.14), and no voxel outside the body (the possible-dose mask, else the
    body from the CT) may get dose. The error names the patient and the likely cause.

    The highest prescription, deliberately, not the primary target's (:func:`~DoseSegLib.core.case.primary_target`,
    which normalises and scales the report): a boost (a GTV at 74 Gy beside PTV70) legitimately raises the peak,
    and refusing its dose for it would be wrong.

    Args:
        dose: the predicted dose (Gy) on the CT grid of the aligned ``case``.
    """
    if case.targets:
        target, top = next(iter(case.targets.items()))
        peak = float(dose.array.max())
        if peak > PLAUSIBLE_PEAK * top:
            cause = (f"{top:g} Gy is far below what the model predicts for this target (check the value)"
                     if target in case.prescriptions else
                     f"a target dose taken wrongly from its name (give it with --prescription {target}=GY)")
            raise DoseSegError(
                f"patient '{case.name}': predicted maximum {peak:.1f} Gy is above {PLAUSIBLE_PEAK:g} x the highest "
                f"prescription ({target}: {top:g} Gy); likely cause: {cause}, a CT unlike the training data, or bad "
                f"model weights (a --weights file or a model trained too briefly)")
    body = case.possible_dose_mask.array if case.possible_dose_mask is not None else body_mask(case.ct).array
    outside = float(np.max(dose.array, where=~body.astype(bool, copy=False), initial=0.0))
    if outside > OUTSIDE_GY:
        raise DoseSegError(
            f"patient '{case.name}': predicted dose up to {outside:.2f} Gy outside the body "
            "(possible-dose mask); likely cause: the dose and the patient are not on one grid (align the case)")
