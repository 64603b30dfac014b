"""Structures from contours on sub-voxel grids, for DVHs at the contours' own resolution.

Each ROI is rasterised (same slab and even-odd rules as on the CT grid, ``rasterise``) onto a
grid ``factor`` times finer than the CT's on every axis (in-plane and between planes) over the
ROI's box: the largest of ``FACTORS`` whose grid holds at most ``FINE_BUDGET`` voxels. End
caps: the structure spans from its first to its last contour plane (Eclipse's rule: the end
slabs are cut at the end planes, where a CT-grid mask keeps the whole end voxels), and a
structure of one plane keeps its whole slab. The factors are even, so that no fine sample lies
on a contour plane, whether the planes are on the CT slices or halfway between them: each
half slab holds exactly factor / 2 samples, and the end caps are cut exactly at the planes
(an odd factor puts a sample on each plane, which the span rule then counts whole: a
systematic excess of half a fine step at each end). A structure whose box is too large for
the budget even at the smallest factor (a body on a clinical CT) keeps its CT-grid voxels,
where partial volume at its edge is a small share of it. The DVH samples the dose at each
fine voxel (``analysis.sampling``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.rasterise import rasterise, subvoxel_grid

FACTORS = (6, 4, 2)
FINE_BUDGET = 1 << 24  # fine voxels per structure (16 MB of booleans)


def fine_factor(contours: Sequence[np.ndarray], grid: Volume, slab_mm: float) -> int:
    """The largest of ``FACTORS`` whose fine grid over the contours fits ``FINE_BUDGET``; 1 when none does."""
    coarse = int(np.prod(subvoxel_grid(grid, contours, 1, slab_mm).shape))
    return next((f for f in FACTORS if coarse * f**3 <= FINE_BUDGET), 1)


def fine_mask(contours: Sequence[np.ndarray], grid: Volume, slab_mm: float) -> Volume | None:
    """The contours rasterised on a sub-voxel grid over their box (see the module), None when too large."""
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return None
    factor = fine_factor(contours, grid, slab_mm)
    if factor == 1:
        return None
    fine = subvoxel_grid(grid, contours, factor, slab_mm)
    return fine.with_array(rasterise(contours, fine, slab_mm))
