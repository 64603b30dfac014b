"""Put every structure and the dose of a case onto the CT grid, through physical coordinates."""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace

import numpy as np

from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume, crop_box, mask_box

__all__ = ["align_case", "align_structure", "body_mask", "covering_box", "outside_fraction", "resample",
    "resample_mask"
]

log = logging.getLogger(__name__)


def _integer_offset(volume: Volume, grid: Volume, tol: float = 1e-3) -> np.ndarray | None:
    """Index of ``volume``'s voxel [0,0,0] on ``grid`` when both share voxel centres, else None."""
    if not (np.allclose(volume.direction, grid.direction, atol=1e-6)
            and np.allclose(volume.spacing, grid.spacing, atol=1e-6)):
        return None
    lps_to_grid = np.linalg.inv(grid.index_to_lps)
    position = (lps_to_grid @ np.append(volume.origin, 1.0))[:3]
    offset = np.round(position)
    return offset.astype(int) if np.allclose(position, offset, atol=tol) else None


def _filled(shape: tuple[int, ...], fill: float, dtype) -> np.ndarray:
    """A new array of ``fill`` in Fortran order (i fastest, as NRRD, DICOM and SimpleITK store voxels, so
    SimpleITK results and file data copy in without transposing); zeros come from untouched pages."""
    if fill == 0:
        return np.zeros(shape, dtype=dtype, order="F")
    return np.full(shape, fill, dtype=dtype, order="F")


def _paste(volume: Volume, grid: Volume, offset: np.ndarray, fill: float) -> np.ndarray:
    out = _filled(grid.shape, fill, volume.array.dtype)
    src_lo = np.maximum(-offset, 0)
    dst_lo = np.maximum(offset, 0)
    size = np.minimum(np.asarray(volume.shape) - src_lo, np.asarray(grid.shape) - dst_lo)
    if np.all(size > 0):
        src = tuple(slice(a, a + n) for a, n in zip(src_lo, size, strict=True))
        dst = tuple(slice(a, a + n) for a, n in zip(dst_lo, size, strict=True))
        out[dst] = volume.array[src]
    return out


def covering_box(volume: Volume, grid: Volume, margin: int = 0) -> tuple[slice, ...] | None:
    """The box of ``grid`` voxels that interpolating ``volume`` can reach (its extent grown by one
    of its voxels), grown by ``margin`` more ``grid`` voxels, or None when they do not overlap;
    every other ``grid`` voxel gets the fill value."""
    corners = np.array(list(itertools.product(*[(-1.0, n) for n in volume.shape])))
    lps = np.c_[corners, np.ones(len(corners))] @ volume.index_to_lps.T
    index = (lps @ np.linalg.inv(grid.index_to_lps).T)[:, :3]
    low = np.maximum(np.floor(index.min(axis=0)).astype(int) - margin, 0)
    high = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1 + margin, grid.shape)
    if np.any(high <= low):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def _resample_into(out: np.ndarray, volume: Volume, grid: Volume, box: tuple[slice, ...], interpolation: str,
                   fill: float, threshold: float | None = None) -> None:
    """Write ``volume`` resampled by SimpleITK at the voxels ``box`` of ``grid`` into ``out[box]``
    (kept where >= ``threshold`` when given), read through a view of SimpleITK's result: no copy
    in between (the view is valid only while the result lives, so it never leaves this function)."""
    import SimpleITK as sitk

    modes = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    source = volume.to_sitk()
    if interpolation == "linear":
        source = sitk.Cast(source, sitk.sitkFloat32)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([region.stop - region.start for region in box])
    resampler.SetOutputSpacing(grid.spacing)
    resampler.SetOutputOrigin(tuple((grid.index_to_lps @ np.append([r.start for r in box], 1.0))[:3]))
    resampler.SetOutputDirection(grid.direction.flatten().tolist())
    resampler.SetInterpolator(modes[interpolation])
    resampler.SetDefaultPixelValue(fill)
    image = resampler.Execute(source)
    values = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)
    out[box] = values if threshold is None else values >= threshold


def resample(volume: Volume, grid: Volume, interpolation: str = "linear", fill: float = 0.0) -> Volume:
    """Resample ``volume`` onto ``grid``'s geometry by physical position.

    Grids that share voxel centres are copied exactly; any other geometry
    (spacing, origin, rotated direction) goes through SimpleITK, only over the
    part of ``grid`` that ``volume`` covers (``fill`` elsewhere). Linear
    interpolation gives float32.

    Args:
        interpolation: "linear" or "nearest".
        fill: value outside ``volume``.
    """
    offset = _integer_offset(volume, grid)
    if offset is not None:
        return grid.with_array(_paste(volume, grid, offset, fill))
    needed = covering_box(grid, volume, margin=2)  # the source voxels the grid's points can read
    if needed is not None and any(b.stop - b.start < n for b, n in zip(needed, volume.shape, strict=True)):
        volume = crop_box(volume, needed)
    dtype = np.dtype(np.float32 if interpolation == "linear" else volume.array.dtype)
    is_mask = dtype.kind == "b"
    out = _filled(grid.shape, fill, np.uint8 if is_mask else dtype)
    box = covering_box(volume, grid)
    if box is not None:
        _resample_into(out, volume, grid, box, interpolation, fill)
    return grid.with_array(out.astype(bool) if is_mask else out)


def resample_mask(mask: Volume, grid: Volume) -> Volume:
    """A boolean mask on ``grid``: linear interpolation of the mask, kept where >= 0.5.

    Only the mask's bounding box (grown by one voxel of zeros, which the interpolation reads)
    is interpolated, onto the part of ``grid`` it covers.
    """
    if mask.array.any():
        mask = crop_box(mask, mask_box(mask.array, 1))
    offset = _integer_offset(mask, grid)
    if offset is not None:
        return grid.with_array(_paste(mask.with_array(mask.array.astype(bool, copy=False)), grid, offset, False))
    out = _filled(grid.shape, 0, bool)
    box = covering_box(mask, grid)
    if box is not None:
        _resample_into(out, mask.with_array(mask.array.astype(np.float32)), grid, box, "linear", 0.0, threshold=0.5)
    return grid.with_array(out)


def _inside(index: np.ndarray, size) -> np.ndarray:
    """Continuous indices inside a grid of ``size`` voxels as ITK counts them: [-0.5, size - 0.5),
    a point on a voxel's edge belonging to the voxel above it."""
    return (index >= -0.5 - 1e-6) & (index < size - 0.5 - 1e-6)


def outside_fraction(mask: Volume, grid: Volume) -> float:
    """Fraction of the mask's voxel centres that fall outside ``grid`` (its voxels' extent)."""
    if not mask.array.any():
        return 0.0
    mask = crop_box(mask, mask_box(mask.array))  # only its bounding box counts

    def inside(ijk: np.ndarray) -> np.ndarray:
        lps = ijk @ (mask.direction * np.asarray(mask.spacing)).T + np.asarray(mask.origin)
        grid_index = (lps - np.asarray(grid.origin)) @ np.linalg.inv((grid.direction * np.asarray(grid.spacing)).T)
        return np.all(_inside(grid_index, np.asarray(grid.shape)), axis=1)

    corners = np.array(list(itertools.product(*[(0, n - 1) for n in mask.shape])))
    if inside(corners).all():  # the grid is convex: every voxel centre is inside too
        return 0.0
    if np.allclose(mask.direction, grid.direction, atol=1e-6):  # same axes: inside is separable per axis
        start = grid.direction.T @ (np.asarray(mask.origin) - np.asarray(grid.origin)) / np.asarray(grid.spacing)
        step = np.asarray(mask.spacing) / np.asarray(grid.spacing)
        positions = [start[a] + step[a] * np.arange(n) for a, n in enumerate(mask.shape)]
        axes = [_inside(p, size) for p, size in zip(positions, grid.shape, strict=True)]
        kept = np.count_nonzero(mask.array[np.ix_(*axes)])
        return 1.0 - kept / np.count_nonzero(mask.array)
    return 1.0 - inside(np.argwhere(mask.array)).mean()


def align_structure(name: str, mask: Volume, ct: Volume) -> Volume:
    """A structure on the CT grid; warns when clipped, fails when it misses the CT entirely."""
    if not mask.array.any():
        raise DoseSegError(f"structure '{name}' is empty")
    outside = outside_fraction(mask, ct)
    aligned = resample_mask(mask, ct)
    if outside >= 1.0 or not aligned.array.any():
        raise DoseSegError(f"structure '{name}' does not overlap the CT")
    if outside > 0:
        log.warning("structure '%s': %.1f%% of it lies outside the CT and was clipped", name, 100 * outside)
    return aligned


def body_mask(ct: Volume, threshold_hu: float = -400.0) -> Volume:
    """The patient's body from the CT: largest connected region above ``threshold_hu``, holes filled
    slice by slice (background not joined to the slice's edge in-plane, 4-connected).

    Worked in the body's bounding box (outside it all is background joined to the edge, so the result
    is the same as on the whole grid), the holes of all slices labelled in one pass."""
    from scipy import ndimage

    tissue = ct.array > threshold_hu
    if not tissue.any():
        raise DoseSegError(f"CT has no voxel above {threshold_hu} HU: cannot derive a body mask")
    box = mask_box(tissue)
    labels, _ = ndimage.label(tissue[box])
    sizes = np.bincount(labels[labels > 0])
    largest = labels == int(np.argmax(sizes))
    inner = mask_box(largest)
    largest = largest[inner]
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    background, _ = ndimage.label(~largest, in_plane)
    edge = np.unique(np.concatenate([background[[0, -1], :, :].ravel(), background[:, [0, -1], :].ravel()]))
    largest |= ~np.isin(background, edge)  # background regions off the edge: the holes
    body = np.zeros(ct.shape, bool)
    body[tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner, strict=True))] = largest
    return ct.with_array(body)


def align_case(case: Case) -> Case:
    """The case with every structure, the dose and the possible-dose mask on the CT grid.

    A missing possible-dose mask is replaced by the body mask derived from the CT. Structures
    given finer than the CT grid are also kept on their own grids (``fine_structures``), as are the
    case's own ``fine_structures`` (a DICOM reader's contours rasterised on sub-voxel grids).
    """
    ct = case.ct
    structures = {name: align_structure(name, mask, ct) for name, mask in case.structures.items()}
    fine = {name: mask for name, mask in case.fine_structures.items() if name in structures}
    fine |= {name: mask for name, mask in case.structures.items() if mask.voxel_volume_cc < ct.voxel_volume_cc}
    dose = None
    if case.dose is not None:
        dose = resample(case.dose, ct, "linear", 0.0)
        array = dose.array.astype(np.float32, copy=False)  # a new array (pasted or resampled): clipped in place
        dose = dose.with_array(np.maximum(array, 0.0, out=array))
    if case.possible_dose_mask is not None:
        possible = align_structure("possible_dose_mask", case.possible_dose_mask, ct)
    else:
        possible = body_mask(ct)
    return replace(case, structures=structures, dose=dose, possible_dose_mask=possible, fine_structures=fine)
