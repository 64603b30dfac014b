"""The grid a network works on: its own voxel size, over the part of the CT it predicts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.case import Case
from DoseSegLib.core.orientation import Reorientation
from DoseSegLib.core.volume import Volume, mask_box
from DoseSegLib.models.common.arrays import BOX_MARGIN

# Voxel sizes the networks were trained on (OpenKBP: 2.7-5.4 mm in-plane, 1.5-3.3 mm slices).
TRAINED_SPACING_MIN = (2.7, 2.7, 1.5)
TRAINED_SPACING_MAX = (5.5, 5.5, 3.3)
WORKING_SPACING = (3.906, 3.906, 2.5)


def model_grid(ct: Volume, spacing: Sequence[float], region: np.ndarray | None = None,
               margin_voxels: int = 0) -> Volume:
    """A grid with the CT's axes at ``spacing`` covering the box of ``region`` (the whole CT when
    None or empty) grown by ``margin_voxels`` of the new spacing, centred on that box.

    Args:
        ct: the CT whose axes and position the grid follows.
        spacing: voxel size (mm) of the grid.
        region: boolean mask on the CT grid (e.g. the possible-dose mask).
        margin_voxels: grid voxels added on each side of the region's box.
    """
    box = mask_box(region) if region is not None and region.any() else tuple(slice(0, n) for n in ct.shape)
    low = np.array([b.start for b in box], dtype=float)
    high = np.array([b.stop - 1 for b in box], dtype=float)
    working = np.asarray(spacing, dtype=float)
    extent = (high - low) * np.asarray(ct.spacing) + 2 * margin_voxels * working
    first_extent = np.asarray(ct.spacing) * (high - low + 1)  # the box's own size, voxel edges included
    shape = np.maximum(np.round(np.maximum(extent, first_extent) / working).astype(int), 1)
    centre = (ct.index_to_lps @ np.append((low + high) / 2, 1.0))[:3]
    first = centre - ct.direction @ (working * (shape - 1) / 2)
    return Volume(np.zeros(tuple(shape), np.int16), tuple(working), tuple(first), ct.direction)


def working_grid(ct: Volume, region: np.ndarray | None = None) -> Volume | None:
    """A grid at the trained voxel size covering the CT (or the box of ``region``, e.g. the
    possible-dose mask, with the network's margin), or None when the CT's spacing is fine as is."""
    spacing = np.asarray(ct.spacing)
    if np.all(spacing >= TRAINED_SPACING_MIN) and np.all(spacing <= TRAINED_SPACING_MAX):
        return None
    return model_grid(ct, WORKING_SPACING, region, BOX_MARGIN + 1 if region is not None else 0)


def box_volume(grid: Volume, box: tuple[slice, ...], array: np.ndarray) -> Volume:
    """``array`` (the shape of ``box``) as a volume at the place of ``box`` in ``grid``."""
    origin = grid.index_to_lps @ np.append([region.start for region in box], 1.0)
    return Volume(array, grid.spacing, tuple(origin[:3]), grid.direction)


def training_grid_case(case: Case) -> Case:
    """A case read for a training cohort as the networks see it when they predict: the dose on the CT grid,
    canonical voxel order, and the working grid when the CT's voxel size lies outside the trained range
    (CT linear, masks nearest, dose linear; see :func:`working_grid`)."""
    if case.dose is not None:
        dose = resample(case.dose, case.ct, "linear", 0.0)
        case = replace(case, dose=dose.with_array(np.maximum(dose.array.astype(np.float32), 0.0)))
    case = Reorientation.of(case.ct).case_to_canonical(case)
    body = case.possible_dose_mask
    target = working_grid(case.ct, None if body is None else body.array)
    if target is None:
        return case
    ct = resample(case.ct, target, "linear", -1000.0)
    moved = None if case.dose is None else resample(case.dose, target, "linear", 0.0)
    return replace(
        case, ct=ct.with_array(np.rint(ct.array).astype(np.int16)),
        structures={name: resample_mask(mask, target) for name, mask in case.structures.items()},
        possible_dose_mask=None if body is None else resample_mask(body, target),
        dose=None if moved is None else moved.with_array(np.maximum(moved.array.astype(np.float32), 0.0)),
    )
