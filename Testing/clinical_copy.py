"""A clinical-size copy of an OpenKBP patient, as a treatment-planning system exports one.

The CT resampled to about 1 mm voxels (cubic B-spline: linear interpolation of a 4-5 mm CT would blur it
as no scanner does, and a network fed the blurred copy loses about 0.015 of Dice), each structure and the possible-dose mask resampled
onto that grid (linear, kept >= 0.5) and cropped to its own bounding box, the dose on a 2.5 mm grid of
its own over the possible-dose mask's box. Shared by ``benchmarks/bench_clinical.py`` (the full
512 x 512 x 300 CT) and the fine-CT accuracy test (the body's box only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from DoseSegLib.core.alignment import body_mask, resample, resample_mask
from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume, crop_to_content, mask_box

FINE_SHAPE = (512, 512, 300)
FINE_SPACING = (1.1, 1.1, 1.25)
DOSE_SPACING = (2.5, 2.5, 2.5)


def centred_grid(centre: np.ndarray, shape: Sequence[int], spacing: Sequence[float]) -> Volume:
    """An empty grid of ``shape`` voxels of ``spacing`` (identity axes) centred on ``centre`` (LPS, mm)."""
    origin = centre - np.asarray(spacing) * (np.asarray(shape) - 1) / 2
    return Volume(np.zeros(tuple(shape), dtype=np.uint8), tuple(spacing), tuple(origin))


def _centre(volume: Volume, box: tuple[slice, ...] | None = None) -> np.ndarray:
    """LPS position of the centre of ``box`` (the whole grid when None) of ``volume``."""
    box = box or tuple(slice(0, n) for n in volume.shape)
    middle = [(b.start + b.stop - 1) / 2 for b in box]
    return (volume.index_to_lps @ np.append(middle, 1.0))[:3]


def full_size_grid(ct: Volume, shape: Sequence[int] = FINE_SHAPE,
                   spacing: Sequence[float] = FINE_SPACING) -> Volume:
    """The clinical CT grid: ``shape`` voxels of ``spacing`` centred on ``ct``."""
    return centred_grid(_centre(ct), shape, spacing)


def body_box_grid(ct: Volume, spacing: Sequence[float] = FINE_SPACING) -> Volume:
    """A grid of ``spacing`` voxels covering the box of the body on ``ct`` (edges of its voxels included)."""
    box = mask_box(body_mask(ct).array)
    extent = np.array([b.stop - b.start for b in box]) * np.asarray(ct.spacing)
    shape = np.ceil(extent / np.asarray(spacing)).astype(int)
    return centred_grid(_centre(ct, box), shape, spacing)


def _own_box(mask: Volume) -> Volume:
    """The mask on its own grid: cropped to its bounding box."""
    return crop_to_content(mask, mask.array)


def _fine_ct(ct: Volume, grid: Volume) -> Volume:
    """``ct`` on ``grid`` by cubic B-spline interpolation, kept within the CT's own range of HU."""
    import SimpleITK as sitk

    source = sitk.Cast(ct.to_sitk(), sitk.sitkFloat32)
    fine = sitk.Resample(source, grid.to_sitk(), sitk.Transform(), sitk.sitkBSpline, -1000.0, sitk.sitkFloat32)
    values = np.clip(np.rint(Volume.from_sitk(fine).array), ct.array.min(), ct.array.max())
    return grid.with_array(values.astype(np.int16))


def clinical_copy(case: Case, grid: Volume) -> Case:
    """``case`` (as read: structures and dose on their own grids) with its CT on ``grid``."""
    fine_ct = _fine_ct(case.ct, grid)
    structures = {name: _own_box(resample_mask(mask, grid)) for name, mask in case.structures.items()}
    possible = _own_box(resample_mask(case.possible_dose_mask, grid))
    extent = np.asarray(possible.shape) * np.asarray(possible.spacing)
    dose_shape = np.ceil(extent / DOSE_SPACING).astype(int) + 1
    dose = resample(case.dose, centred_grid(_centre(possible), dose_shape, DOSE_SPACING), "linear", 0.0)
    dose = Volume(np.clip(dose.array, 0, None).astype(np.float32), dose.spacing, dose.origin, dose.direction)
    return Case(case.name, fine_ct, structures, dose, possible)
