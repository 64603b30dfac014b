"""Segmentation metrics: Dice, HD95, surface Dice (MONAI) and the DOSELO dosimetric RMAE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from DoseSegLib.analysis.segmetrics import dice, dosimetric_rmae, hausdorff95, segmentation_table, surface_dice
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

SHAPE = (30, 30, 24)
SPACING = (1.0, 1.5, 2.5)


def volume(mask: np.ndarray) -> Volume:
    return Volume(mask, SPACING, (0.0, 0.0, 0.0))


def plate(k: int) -> np.ndarray:
    """A one-voxel-thick plate at slice k."""
    mask = np.zeros(SHAPE, dtype=bool)
    mask[5:25, 5:25, k] = True
    return mask


def blob(center: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
    i, j, k = np.indices(SHAPE)
    return sum(((axis - c) / r) ** 2 for axis, c, r in zip((i, j, k), center, radii)) <= 1


def surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances (mm) from the surface voxels of ``a`` to the surface of ``b`` (plain scipy)."""
    edges_a = a ^ ndimage.binary_erosion(a)
    edges_b = b ^ ndimage.binary_erosion(b)
    return ndimage.distance_transform_edt(~edges_b, sampling=SPACING)[edges_a]


def test_dice() -> None:
    a, b = blob((15, 15, 12), (8, 6, 5)), blob((17, 14, 12), (7, 6, 6))
    assert dice(volume(a), volume(b)) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), rel=1e-6)
    assert dice(volume(a), volume(a)) == 1.0
    assert dice(volume(a), volume(np.zeros(SHAPE, dtype=bool))) == 0.0
    empty = volume(np.zeros(SHAPE, dtype=bool))
    assert dice(empty, empty) == 1.0


def test_hausdorff_of_parallel_plates_is_their_distance() -> None:
    # Plates 3 slices apart along k (2.5 mm): every surface point is 7.5 mm from the other plate.
    assert hausdorff95(volume(plate(5)), volume(plate(8))) == pytest.approx(7.5)
    assert hausdorff95(volume(plate(5)), volume(plate(5))) == 0.0


def test_hausdorff95_matches_a_scipy_computation() -> None:
    a, b = blob((15, 15, 12), (8, 6, 5)), blob((18, 13, 11), (6, 7, 4))
    expected = max(np.percentile(surface_distances(a, b), 95), np.percentile(surface_distances(b, a), 95))
    assert hausdorff95(volume(a), volume(b)) == pytest.approx(expected, rel=1e-5)


def test_surface_dice() -> None:
    a, b = volume(plate(5)), volume(plate(8))
    assert surface_dice(a, b, tolerance_mm=7.0) == 0.0
    assert surface_dice(a, b, tolerance_mm=8.0) == 1.0
    x, y = blob((15, 15, 12), (8, 6, 5)), blob((18, 13, 11), (6, 7, 4))
    ab, ba = surface_distances(x, y), surface_distances(y, x)
    expected = ((ab <= 2.0).sum() + (ba <= 2.0).sum()) / (ab.size + ba.size)
    assert surface_dice(volume(x), volume(y), 2.0) == pytest.approx(expected, rel=1e-5)


def test_empty_masks() -> None:
    empty = volume(np.zeros(SHAPE, dtype=bool))
    full = volume(plate(3))
    assert hausdorff95(empty, empty) == 0.0 and math.isinf(hausdorff95(full, empty))
    assert surface_dice(empty, empty) == 1.0 and surface_dice(empty, full) == 0.0


def test_masks_on_different_grids_are_refused() -> None:
    other = Volume(plate(3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(DoseSegError, match="same grid"):
        dice(volume(plate(3)), other)


def test_segmentation_table() -> None:
    ref = {"Brainstem": volume(plate(5)), "Larynx": volume(plate(10))}
    rows = segmentation_table({"Brainstem": volume(plate(5))}, ref, tolerance_mm=1.0)
    assert rows[0] == {"structure": "Brainstem", "dice": 1.0, "hd95_mm": 0.0, "surface_dice_1mm": 1.0}
    assert rows[1]["dice"] == 0.0 and math.isinf(rows[1]["hd95_mm"])  # not predicted at all


def test_dosimetric_rmae() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 70, SHAPE)
    pred = true + rng.normal(0, 2, SHAPE)
    mask = blob((15, 15, 12), (10, 10, 8))
    pred[~mask] += 100  # outside the possible-dose mask: ignored
    expected = np.abs(pred - true)[mask].sum() / np.abs(true)[mask].sum()
    assert dosimetric_rmae(volume(pred), volume(true), volume(mask)) == pytest.approx(expected)
    assert dosimetric_rmae(volume(true), volume(true), volume(mask)) == 0.0
    with pytest.raises(DoseSegError, match="zero everywhere"):
        dosimetric_rmae(volume(pred), volume(np.zeros(SHAPE)), volume(mask))
