"""Contours from masks: per slice, closed polygons that rasterise back to exactly the same voxels.

The polygon runs along the voxel boundaries (through the voxel corners), so that its area is
exactly the voxels' area (a TPS reading it gets the mask's volume, slab by slab) and every
voxel centre lies half a voxel from it (rounding the coordinates cannot move a centre across).
Straight runs are reduced to their end points. Voxels touching only at a corner get separate
polygons (at such a corner the boundary turns left, hugging the voxel it came along). Holes
are keyholes (``keyhole``), the convention every reader agrees on.
"""

from __future__ import annotations

import numpy as np

from DoseSegLib.io.dicom.keyhole import keyholes

# boundary edges of an inside pixel (i, j), in doubled corner coordinates, interior on the left
_SIDES = (
    ((0, -1), (-1, -1), (1, -1)),   # neighbour below: bottom edge, heading +x
    ((1, 0), (1, -1), (1, 1)),      # neighbour right: right edge, heading +y
    ((0, 1), (1, 1), (-1, 1)),      # neighbour above: top edge, heading -x
    ((-1, 0), (-1, 1), (-1, -1)),   # neighbour left: left edge, heading -y
)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Directed boundary edges ``(n, 4)``: start and end corners in doubled coordinates (2i +- 1, 2j +- 1)."""
    padded = np.pad(mask, 1)
    edges = []
    for (di, dj), start, end in _SIDES:
        neighbour = padded[1 + di: padded.shape[0] - 1 + di, 1 + dj: padded.shape[1] - 1 + dj]
        i, j = np.nonzero(mask & ~neighbour)
        edges.append(np.column_stack([2 * i + start[0], 2 * j + start[1], 2 * i + end[0], 2 * j + end[1]]))
    return np.concatenate(edges)


def _simplify(points: np.ndarray) -> np.ndarray:
    """Drop points lying on the straight line through their neighbours (exact, on doubled coordinates)."""
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    a, b = points - before, after - points
    keep = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] != 0
    return points[keep] if keep.sum() >= 3 else points


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons ``(n, 2)`` in index coordinates (x = i, y = j) whose fill is ``mask``, holes as keyholes
    (``keyhole``: the same voxels whether a reader fills by the even-odd rule or fills every contour)."""
    edges = _edges(np.asarray(mask, dtype=bool))
    if len(edges) == 0:
        return []
    outgoing: dict[tuple[int, int], list[int]] = {}
    for n, (a, b) in enumerate(zip(edges[:, 0].tolist(), edges[:, 1].tolist(), strict=True)):
        outgoing.setdefault((a, b), []).append(n)
    used = np.zeros(len(edges), dtype=bool)
    loops = []
    for first in range(len(edges)):
        if used[first]:
            continue
        loop, edge = [], first
        while not used[edge]:
            used[edge] = True
            loop.append(edge)
            candidates = [e for e in outgoing[(int(edges[edge, 2]), int(edges[edge, 3]))] if not used[e]]
            if not candidates:
                break
            edge = _left_turn(edges, edge, candidates)
        loops.append(_simplify(edges[loop, :2]))  # doubled coordinates of the voxel corners
    return [polygon / 2.0 for polygon in keyholes(loops)]


def _left_turn(edges: np.ndarray, edge: int, candidates: list[int]) -> int:
    """Of the edges leaving a corner, the one turning left from ``edge`` (else the first)."""
    dx, dy = edges[edge, 2] - edges[edge, 0], edges[edge, 3] - edges[edge, 1]
    for candidate in candidates:
        ex, ey = edges[candidate, 2] - edges[candidate, 0], edges[candidate, 3] - edges[candidate, 1]
        if (ex, ey) == (-dy, dx):
            return candidate
    return candidates[0]
