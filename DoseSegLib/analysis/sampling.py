"""Each structure's doses, gathered once: the samples every DVH, metric, goal and score of a run reads.

Two ways to sample a structure (the ``dvh_method``):

- ``voxel``: the dose-grid voxels inside the structure's mask on the dose (CT) grid.
- ``auto`` (default): a structure given finer than the dose grid (per-structure NRRDs on
  their own grids, fine rasterised contours) keeps its own grid, and the dose is
  interpolated trilinearly onto each of its voxels, only inside its bounding box; a
  structure given on the dose grid with fewer than ``MIN_VOXELS`` voxels is oversampled:
  each voxel is split into k^3 sub-voxels (its volume is unchanged) at which the dose is
  interpolated trilinearly. Other structures use their dose-grid voxels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import DvhMethod
from DoseSegLib.core.volume import Volume, mask_box

MIN_VOXELS = 100
MAX_OVERSAMPLING = 4


@dataclass(frozen=True)
class StructureDoses:
    """One structure's dose samples, each standing for the same volume.

    Attributes:
        doses: dose (Gy, float64) of every sample, ascending.
        sample_cc: volume of one sample in cm^3.
        voxels: the dose-grid voxel doses inside the structure's mask, ascending (the
            OpenKBP challenge's definition reads these); ``doses`` itself when the method is voxel.
        method: how the samples were taken, in words (the ``dvh_method`` note of the outputs).
    """

    doses: np.ndarray
    sample_cc: float
    voxels: np.ndarray
    method: str

    @property
    def volume_cc(self) -> float:
        return self.doses.size * self.sample_cc


def _axis_weights(start: float, step: float, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower neighbour index and weight of the upper one for ``count`` positions along one grid axis."""
    position = np.clip(start + step * np.arange(count), 0, size - 1)
    lower = np.minimum(np.floor(position).astype(np.intp), max(size - 2, 0))
    return lower, (position - lower).astype(np.float32)


def _interpolate_axis(array: np.ndarray, lower: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along one axis: value[lower] + weight * (value[lower + 1] - value[lower])."""
    step = np.diff(array, axis=axis, append=np.take(array, [-1], axis=axis))
    shape = [1, 1, 1]
    shape[axis] = -1
    out = np.take(step, lower, axis=axis)
    out *= weight.reshape(shape)
    out += np.take(array, lower, axis=axis)
    return out


def dose_on_grid(dose: Volume, grid: Volume) -> np.ndarray:
    """The dose interpolated trilinearly at every voxel centre of ``grid`` (float32).

    Separable per axis when both grids share their axes; through SimpleITK otherwise.
    Positions beyond the outermost dose voxel centres take the nearest edge value.
    """
    if not np.allclose(grid.direction, dose.direction, atol=1e-6):
        import SimpleITK as sitk

        source = sitk.Cast(dose.to_sitk(), sitk.sitkFloat32)
        resampled = sitk.Resample(source, grid.to_sitk(), sitk.Transform(), sitk.sitkLinear, 0.0)
        return Volume.from_sitk(resampled).array
    start = dose.direction.T @ (np.asarray(grid.origin) - np.asarray(dose.origin)) / np.asarray(dose.spacing)
    step = np.asarray(grid.spacing) / np.asarray(dose.spacing)
    weights = [_axis_weights(start[a], step[a], grid.shape[a], dose.shape[a]) for a in range(3)]
    box = tuple(slice(int(lower.min()), int(lower.max()) + 2) for lower, _ in weights)
    array = dose.array[box].astype(np.float32, copy=False)
    for axis in (2, 1, 0):  # the last pass copies whole planes: the fastest order for C arrays
        lower, weight = weights[axis]
        array = _interpolate_axis(array, lower - box[axis].start, weight, axis)
    return array


def _cropped(mask: Volume) -> Volume:
    """The mask's bounding box as a volume of its own (same voxels, origin moved)."""
    box = mask_box(mask.array)
    origin = mask.index_to_lps @ np.append([region.start for region in box], 1.0)
    return Volume(np.ascontiguousarray(mask.array[box], dtype=bool), mask.spacing, tuple(origin[:3]), mask.direction)


def _oversampled(mask: Volume, factor: int) -> Volume:
    """The mask's box with each voxel split into ``factor``^3 sub-voxels (nearest neighbour: same volume)."""
    box = _cropped(mask)
    array = box.array
    for axis in range(3):
        array = np.repeat(array, factor, axis=axis)
    spacing = np.asarray(box.spacing) / factor
    shift = box.direction @ (spacing * (factor - 1) / 2)  # first sub-voxel centre from the voxel centre
    return Volume(array, tuple(spacing), tuple(np.asarray(box.origin) - shift), box.direction)


def oversampling_factor(voxel_count: int, min_voxels: int = MIN_VOXELS) -> int:
    """k such that k^3 sub-voxels per voxel give a structure at least ``min_voxels`` samples (at most 4)."""
    if voxel_count >= min_voxels:
        return 1
    return min(MAX_OVERSAMPLING, math.ceil((min_voxels / voxel_count) ** (1 / 3)))


def _fine_samples(dose: Volume, box: Volume) -> np.ndarray:
    """Trilinear dose at every voxel of ``box`` (a structure cropped to its bounding box), ascending."""
    return np.sort(dose_on_grid(dose, box)[box.array]).astype(np.float64)  # float32 sorts faster, same order


def _spacing_text(volume: Volume) -> str:
    return "x".join(f"{s:g}" for s in volume.spacing) + " mm"


def structure_doses(
    dose: Volume, name: str, mask: Volume, fine: Volume | None = None, method: DvhMethod | str = DvhMethod.AUTO
) -> StructureDoses:
    """The dose samples of one structure (see the module's docstring for the methods).

    Args:
        dose: dose (Gy) on the structure's dose-grid mask grid.
        name: structure name (for messages).
        mask: boolean mask on the dose grid.
        fine: the same structure on its own finer grid, when it was given so.
        method: ``auto`` or ``voxel``.
    """
    method = DvhMethod.parse(method)
    if not mask.same_grid(dose):
        raise DoseSegError(f"structure '{name}' is not on the dose grid: align the case first")
    inside = mask.array.astype(bool, copy=False)
    if not inside.any():
        raise DoseSegError(f"structure '{name}' is empty (no voxel set)")
    box = mask_box(inside)
    values = dose.array[box][inside[box]]
    voxels = np.sort(values).astype(np.float64)
    voxel_note = f"dose-grid voxels ({_spacing_text(dose)})"
    if method == DvhMethod.VOXEL:
        return StructureDoses(voxels, dose.voxel_volume_cc, voxels, voxel_note)
    if fine is not None and fine.voxel_volume_cc < dose.voxel_volume_cc:
        note = f"structure grid {_spacing_text(fine)}, dose interpolated trilinearly"
        return StructureDoses(_fine_samples(dose, _cropped(fine)), fine.voxel_volume_cc, voxels, note)
    factor = oversampling_factor(voxels.size)
    if factor == 1:
        return StructureDoses(voxels, dose.voxel_volume_cc, voxels, voxel_note)
    fine = _oversampled(mask, factor)
    note = f"dose-grid voxels oversampled {factor}x{factor}x{factor}, dose interpolated trilinearly"
    return StructureDoses(_fine_samples(dose, fine), fine.voxel_volume_cc, voxels, note)


def gather_doses(
    dose: Volume,
    structures: Mapping[str, Volume],
    fine_structures: Mapping[str, Volume] | None = None,
    method: DvhMethod | str = DvhMethod.AUTO,
) -> dict[str, StructureDoses]:
    """Every structure's dose samples, once, for the DVHs, metrics, goals and scores of one dose.

    Args:
        dose: dose (Gy) on the structures' grid.
        structures: boolean masks on the dose grid, by name.
        fine_structures: structures given finer than the dose grid, on their own grids.
        method: ``auto`` (partial volume: fine grids, small structures oversampled) or ``voxel``.
    """
    fine_structures = fine_structures or {}
    method = DvhMethod.parse(method)
    return {
        name: structure_doses(dose, name, mask, fine_structures.get(name), method)
        for name, mask in structures.items()
    }
