"""Sanity checks on a dose before it is analysed: units (Gy, not cGy) and coverage of the structures."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from DoseSegLib.core.alignment import resample
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

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
    ones = dose.with_array(np.ones(dose.shape, dtype=np.uint8))
    footprint = resample(ones, grid, "nearest", 0).array > 0
    coverage = {}
    for name, mask in structures.items():
        if not mask.same_grid(grid):
            raise DoseSegError(f"structure '{name}' is not on the grid of the other structures: align them first")
        voxels = mask.array.astype(bool, copy=False)
        total = np.count_nonzero(voxels)
        coverage[name] = np.count_nonzero(footprint[voxels]) / total if total else 0.0
    return coverage


def check_dose_coverage(dose: Volume, structures: Mapping[str, Volume]) -> dict[str, float]:
    """Warn, naming each structure, when part of it lies outside the dose grid (its dose counts as 0 there).

    Raises DoseSegError when no structure overlaps the dose at all (wrong dose file or geometry).

    Args:
        dose: the dose on its own grid (before alignment).
        structures: boolean masks, all on one grid (e.g. the CT's).

    Returns:
        The fraction of each structure inside the dose grid.
    """
    coverage = dose_coverage(dose, structures)
    if coverage and max(coverage.values()) == 0:
        raise DoseSegError("the dose grid covers none of the structures: wrong dose file or geometry?")
    for name, fraction in coverage.items():
        if fraction < 1:
            log.warning(
                "structure '%s': %.1f%% of its voxels lie outside the dose grid (dose taken as 0 Gy there)",
                name, 100 * (1 - fraction),
            )
    return coverage
