"""Holes as keyholes: each hole's boundary spliced into the contour around it through a zero-width channel.

DICOM leaves the meaning of a contour inside another to the reader: some fill by the even-odd
rule (a nested contour is a hole), others fill every contour (plastimatch, some TPSs: the hole
is lost). A keyhole contour means one thing to all of them: one polygon whose area is the
outer area less the hole's, entering the hole along a channel whose two sides coincide (they
cancel in any crossing count). Islands inside holes stay separate polygons.

Works on the axis-aligned voxel-boundary loops of ``contours`` (doubled corner coordinates):
holes are taken from the top (smallest y) down; from each hole's topmost edge a vertical ray
toward smaller y meets, first, the contour around the hole (or a hole already spliced into
it): the channel runs along that ray, a quarter voxel off the pixel centres and off the voxel
boundaries (no voxel centre on it, no overlap with another edge).
"""

from __future__ import annotations

import numpy as np


def signed_area(loop: np.ndarray) -> float:
    """Shoelace area (positive counter-clockwise: an outer loop of ``contours``; negative: a hole)."""
    x, y = loop[:, 0], loop[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _crossing(loop: np.ndarray, x: float, y: float) -> np.ndarray:
    """Indices of the loop's horizontal edges at height < ``y`` spanning abscissa ``x``."""
    after = np.roll(loop, -1, axis=0)
    return np.flatnonzero((loop[:, 1] == after[:, 1]) & (loop[:, 1] < y)
                          & (np.minimum(loop[:, 0], after[:, 0]) < x) & (np.maximum(loop[:, 0], after[:, 0]) > x))


def _splice(outer: np.ndarray, edge: int, hole: np.ndarray, x: float) -> np.ndarray:
    """``outer`` entering ``hole`` from its edge ``edge`` along the vertical line at ``x``."""
    top = hole[:, 1].min()
    hole_edge = next(e for e in _crossing(hole, x, top + 1) if hole[e, 1] == top)
    p, q = np.array([[x, outer[edge, 1]]]), np.array([[x, top]])
    around = np.concatenate([hole[hole_edge + 1:], hole[: hole_edge + 1]])  # from the edge's end round to its start
    return np.concatenate([outer[: edge + 1], p, q, around, q, p, outer[edge + 1:]])


def keyholes(loops: list[np.ndarray]) -> list[np.ndarray]:
    """The loops with every hole spliced into the loop around it (see the module's docstring)."""
    outers = [loop.astype(float) for loop in loops if signed_area(loop) > 0]
    holes = [loop.astype(float) for loop in loops if signed_area(loop) < 0]
    holes.sort(key=lambda h: (h[:, 1].min(), h[h[:, 1] == h[:, 1].min(), 0].min()))
    for hole in holes:
        top = hole[:, 1].min()
        x = hole[hole[:, 1] == top, 0].min() + 1.5  # a quarter voxel right of the hole's top-left corner
        hits = [(outer[e, 1], n, int(e)) for n, outer in enumerate(outers) for e in _crossing(outer, x, top)]
        _, n, edge = max(hits)  # the nearest boundary above the hole: the contour around it
        outers[n] = _splice(outers[n], edge, hole, x)
    return outers
