"""RTSTRUCT contours onto any grid: the TPS slab convention and the even-odd rule.

Each contour plane stands for a slab of ``slab_mm`` (the CT slice spacing by default)
centred on it, cut at the structure's first and last planes: the structure spans from
its first to its last contour plane, as in Eclipse (a structure of one plane keeps its
whole slab). A grid slice takes the contours of the plane whose slab holds its centre.
Within a plane every contour of the structure counts together by the even-odd rule
(holes and islands need no flags). A voxel is inside when its centre is. The grid may be
the CT's or a finer one around a small structure (``subvoxel_grid``; ``partial`` gives
voxel fractions): contours are planes of patient space, the grid only samples them.

Planes are matched to grid slices with a tolerance of ``MATCH_TOL`` of the grid's slice
step: contour z written to 3 or 2 decimals (as TPSs write them: 110.99982 for slice 111)
still holds the slice, and a slice centre lying on a slab boundary (planes between the
CT slices, e.g. planes on a 2.5 mm grid shifted by 1.25 mm) goes to the plane above it,
whatever the rounding. So a structure whose planes lie between the CT slices covers the
slices between its first and last planes: the TPS's volume, at the CT's resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

PLANE_TOL = 0.05  # contour points may wander this fraction of a grid step off their plane
MATCH_TOL = 0.1  # a plane this fraction of a grid step from a slice centre holds that slice


def fill_polygons(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of 2D polygons given in continuous index coordinates (x = i, y = j).

    Returns a boolean ``shape`` array, True where the pixel centre ``(i, j)`` is inside.
    """
    ni, nj = shape
    rows, starts = [], []
    for polygon in polygons:
        x0, y0 = polygon[:, 0], polygon[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo = np.clip(np.ceil(np.minimum(y0, y1)), 0, nj).astype(int)  # rows j with min <= j < max
        hi = np.clip(np.ceil(np.maximum(y0, y1)), 0, nj).astype(int)
        count = np.maximum(hi - lo, 0)
        edge = np.repeat(np.arange(len(x0)), count)
        j = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + lo[edge]
        x = x0[edge] + (j - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
        rows.append(j)
        starts.append(np.clip(np.ceil(x), 0, ni).astype(int))
    mask = np.zeros((ni, nj), dtype=bool)
    crossed = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
    if crossed.size:
        first, last = crossed.min(), crossed.max() + 1  # only the rows the polygons cross
        flips = np.zeros((last - first, ni + 1), dtype=np.int32)
        np.add.at(flips, (crossed - first, np.concatenate(starts)), 1)
        mask[:, first:last] = (np.cumsum(flips, axis=1)[:, :ni] % 2).astype(bool).T
    return mask


def _planes(contours: Sequence[np.ndarray], grid: Volume) -> dict[float, list[np.ndarray]]:
    """Contours in the grid's continuous index coordinates, grouped by plane (k index)."""
    to_index = np.linalg.inv(grid.index_to_lps)
    located = []
    for points in contours:
        ijk = points @ to_index[:3, :3].T + to_index[:3, 3]
        k = ijk[:, 2]
        if np.ptp(k) > PLANE_TOL:
            raise DoseSegError("a contour is not in a plane of the grid's slices (oblique contours "
                               f"are not supported; it spans {np.ptp(k) * grid.spacing[2]:.2f} mm across slices)")
        located.append((float(k.mean()), ijk[:, :2]))
    planes: dict[float, list[np.ndarray]] = {}
    key = -math.inf
    for level, points in sorted(located, key=lambda item: item[0]):  # contours within MATCH_TOL share a plane
        if level - key > MATCH_TOL:
            key = round(level, 4)
        planes.setdefault(key, []).append(points)
    return planes


def _cropped(fill: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The bounding box of a filled plane and its contents; None when empty."""
    rows, cols = np.flatnonzero(fill.any(axis=1)), np.flatnonzero(fill.any(axis=0))
    if rows.size == 0:
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return box, fill[box]


def rasterise(contours: Sequence[np.ndarray], grid: Volume, slab_mm: float | None = None) -> np.ndarray:
    """A boolean mask on ``grid`` from closed planar contours (each ``(n, 3)`` LPS mm).

    Args:
        contours: the structure's contours, any number per plane.
        grid: the target geometry (only its shape, spacing, origin and direction are used).
        slab_mm: thickness each contour plane stands for; by default the median gap
            between the structure's planes (the grid's slice step when it has one plane).
    """
    mask = np.zeros(grid.shape, dtype=bool)
    planes = _planes([c for c in contours if len(c) >= 3], grid)
    if not planes:
        return mask
    keys = np.array(sorted(planes))
    if slab_mm is None:
        slab_mm = float(np.median(np.diff(keys))) * grid.spacing[2] if len(keys) > 1 else grid.spacing[2]
    half = slab_mm / grid.spacing[2] / 2  # in k steps
    slices = np.arange(grid.shape[2], dtype=float)
    # each slice goes to the plane whose slab [plane - half, plane + half) holds its centre, within MATCH_TOL
    nearest = np.searchsorted((keys[:-1] + keys[1:]) / 2, slices + MATCH_TOL, side="right")
    distance = slices - keys[nearest]
    inside = (distance >= -half - MATCH_TOL) & (distance < half - MATCH_TOL)
    if len(keys) > 1:  # the structure spans from its first to its last plane (a lone plane keeps its slab)
        inside &= (slices >= keys[0] - MATCH_TOL) & (slices <= keys[-1] + MATCH_TOL)
    filled: dict[int, tuple[tuple[slice, slice], np.ndarray] | None] = {}
    for k in np.flatnonzero(inside):
        plane = int(nearest[k])
        if plane not in filled:
            filled[plane] = _cropped(fill_polygons(planes[float(keys[plane])], grid.shape[:2]))
        cropped = filled[plane]
        if cropped is not None:  # write only the plane's bounding box: the k axis is the slow one
            (rows, cols), block = cropped
            mask[rows, cols, k] = block
    return mask


def subvoxel_grid(
    grid: Volume, contours: Sequence[np.ndarray], factor: int = 4, slab_mm: float | None = None
) -> Volume:
    """A grid ``factor`` times finer than ``grid`` on every axis, covering the contours and their end slabs.

    For small structures whose DVH needs sub-voxel sampling: rasterise their contours onto it
    (with the CT's ``slab_mm``). Its voxels nest exactly in ``grid``'s.
    """
    to_index = np.linalg.inv(grid.index_to_lps)
    ijk = np.concatenate(contours) @ to_index[:3, :3].T + to_index[:3, 3]
    half = (slab_mm or grid.spacing[2]) / grid.spacing[2] / 2
    lo = np.floor(ijk.min(axis=0) - (0.5, 0.5, half - 0.5)).astype(int)  # whole coarse voxels, as indices
    hi = np.ceil(ijk.max(axis=0) + np.array([0.5, 0.5, half - 0.5])).astype(int)
    shape = tuple(int(n) for n in (hi - lo + 1) * factor)
    first = lo - 0.5 + 0.5 / factor  # the first fine voxel centre, in coarse indices
    origin = grid.index_to_lps @ np.append(first, 1.0)
    spacing = tuple(s / factor for s in grid.spacing)
    return Volume(np.broadcast_to(np.False_, shape), spacing, tuple(origin[:3]), grid.direction)
