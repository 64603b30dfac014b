"""One colour table for structures: segmentations, report figures and the Slicer module share it.

Colours are RGB triples in [0, 1] (what Slicer segments, matplotlib and .seg.nrrd files use).
"""

from __future__ import annotations

import colorsys
import itertools
import zlib
from collections.abc import Iterable

from DoseSegLib.core.case import OARS, target_prescription

__all__ = ["DISTINCT", "OAR_COLORS", "PALETTE", "structure_color", "structure_colors", "target_color"]

OAR_COLORS: dict[str, tuple[float, float, float]] = dict(zip(OARS, [
    (0.85, 0.65, 0.13),  # Brainstem
    (1.00, 1.00, 0.00),  # SpinalCord
    (0.00, 0.55, 1.00),  # RightParotid
    (0.00, 0.80, 0.80),  # LeftParotid
    (0.65, 0.40, 0.20),  # Esophagus
    (0.30, 0.80, 0.30),  # Larynx
    (0.90, 0.90, 0.75),  # Mandible
], strict=True))


def target_color(level_gy: float) -> tuple[float, float, float]:
    """Red for 70 Gy and above, shading towards pink for lower prescriptions (40 Gy and below)."""
    shade = min(max((70.0 - level_gy) / 30.0, 0.0), 1.0)
    return (1.0, 0.45 * shade, 0.7 * shade)


def structure_color(name: str) -> tuple[float, float, float]:
    """The colour of a canonical structure name; other names get a stable colour from their hash."""
    if name in OAR_COLORS:
        return OAR_COLORS[name]
    level = target_prescription(name)
    if level is not None:
        return target_color(level)
    hue = (zlib.crc32(name.encode()) % 360) / 360.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.6, 0.9)
    return float(red), float(green), float(blue)


DISTINCT = 0.45  # the least RGB distance between two colours of one set
# fallback colours: an RGB grid without the near-black and near-white (the plots' lines and background)
PALETTE = tuple(c for c in itertools.product((0.0, 0.25, 0.5, 0.75, 1.0), repeat=3) if 0.5 <= sum(c) <= 2.5)


def _distance(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) ** 0.5


def structure_colors(names: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """``{name: colour}`` for each name (see :func:`structure_color`), distinct within the set: a colour
    too close to an earlier name's is replaced by the grid colour farthest from those in use."""
    colors: dict[str, tuple[float, float, float]] = {}
    for name in names:
        color: tuple[float, ...] = structure_color(name)
        if colors and min(_distance(color, c) for c in colors.values()) < DISTINCT:
            color = max(PALETTE, key=lambda p: min(_distance(p, c) for c in colors.values()))
        colors[name] = (color[0], color[1], color[2])
    return colors
