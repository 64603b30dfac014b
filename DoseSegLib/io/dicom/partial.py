"""Partial volume: the fraction of each grid voxel inside a contoured structure, with bounded memory.

Sub-voxel sampling (``factor`` points per axis, so ``factor**3`` per voxel) of the same slab
and even-odd rules as ``rasterise``, done only over the structure's bounding box and a few
slices at a time, so a body contour costs no more memory than a small organ's. For DVHs of
small structures, where whole-voxel masks miss or double their edges.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.rasterise import rasterise

MAX_FINE_VOXELS = 1 << 26  # fine samples held at once (64 MB of booleans)


def _box(contours: Sequence[np.ndarray], grid: Volume, half_slab: float) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds [lo, hi) of the grid voxels the contours and their end slabs can touch."""
    to_index = np.linalg.inv(grid.index_to_lps)
    ijk = np.concatenate(contours) @ to_index[:3, :3].T + to_index[:3, 3]
    reach = np.array([1.0, 1.0, half_slab + 1.0])
    lo = np.clip(np.floor(ijk.min(axis=0) - reach), 0, grid.shape).astype(int)
    hi = np.clip(np.ceil(ijk.max(axis=0) + reach) + 1, 0, grid.shape).astype(int)
    return lo, hi


def default_slab_mm(contours: Sequence[np.ndarray], grid: Volume) -> float:
    """The median gap between the contours' planes along the grid's slice axis (its step for one plane)."""
    normal = grid.direction[:, 2]
    planes = np.unique(np.round([float(np.mean(c @ normal)) for c in contours], 3))
    return float(np.median(np.diff(planes))) if len(planes) > 1 else grid.spacing[2]


def partial_volume(contours: Sequence[np.ndarray], grid: Volume, factor: int = 4,
                   slab_mm: float | None = None) -> np.ndarray:
    """Float32 fractions in [0, 1] on ``grid``: the share of each voxel's sub-samples inside the structure.

    Args:
        contours: the structure's closed planar contours (``(n, 3)`` LPS mm).
        grid: the target geometry, usually the CT's.
        factor: sub-samples per voxel and axis.
        slab_mm: thickness each contour plane stands for (the median plane gap by default).
    """
    fractions = np.zeros(grid.shape, dtype=np.float32)
    contours = [c for c in contours if len(c) >= 3]
    if not contours:
        return fractions
    slab_mm = slab_mm or default_slab_mm(contours, grid)
    lo, hi = _box(contours, grid, slab_mm / grid.spacing[2] / 2)
    size = (hi - lo) * factor
    if np.any(size == 0):
        return fractions
    step = max(1, int(MAX_FINE_VOXELS // (size[0] * size[1] * factor)))  # CT slices per chunk
    spacing = tuple(s / factor for s in grid.spacing)
    for k0 in range(lo[2], hi[2], step):
        k1 = min(k0 + step, hi[2])
        first = np.array([lo[0], lo[1], k0]) - 0.5 + 0.5 / factor  # the first sub-sample, in grid indices
        origin = (grid.index_to_lps @ np.append(first, 1.0))[:3]
        shape = (int(size[0]), int(size[1]), (k1 - k0) * factor)
        fine = rasterise(contours, Volume(np.broadcast_to(np.False_, shape), spacing, tuple(origin), grid.direction),
                         slab_mm)
        blocks = fine.reshape(hi[0] - lo[0], factor, hi[1] - lo[1], factor, k1 - k0, factor)
        fractions[lo[0]:hi[0], lo[1]:hi[1], k0:k1] = blocks.sum(axis=(1, 3, 5), dtype=np.int32) / factor**3
    return fractions
