"""DoseSeg's own RTSTRUCT read back: contour planes matched to CT slices with a tolerance.

TPSs write contour z to 3 or 2 decimals; on a CT whose slice positions are not round numbers
every plane is then a little off its slice. The top plane must still hold the top slice, and
small structures (a lens of 2 slices) must come back whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import awkward_case, round_contours, write_dicom_patient

from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.contours import mask_polygons
from DoseSegLib.io.dicom.rasterise import fill_polygons, rasterise
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.phantom import make_phantom


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def awkward() -> tuple:
    return awkward_case(make_phantom(shape=(48, 56, 40)))


@pytest.mark.parametrize("decimals", [3, 2])
def test_rounded_contour_z_reads_back_every_slice(tmp_path: Path, awkward, decimals: int) -> None:
    folder = write_dicom_patient(tmp_path / "p", awkward)
    round_contours(folder / "rtstruct.dcm", decimals, xy_decimals=decimals)
    back = read_patient(folder)
    assert set(back.structures) == set(awkward.structures)
    for name, mask in awkward.structures.items():
        got = back.structures[name].array
        assert dice(got, mask.array) >= 0.98, name
        assert np.array_equal(got, mask.array), f"{name}: {got.sum()} voxels back of {mask.array.sum()}"
    assert np.array_equal(back.possible_dose_mask.array, awkward.possible_dose_mask.array)


def _square(z: float, half: float = 2.5) -> np.ndarray:
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    return np.array([[5 + a * half, 5 + b * half, z] for a, b in corners])


@pytest.mark.parametrize("error_mm", [-0.004, 0.0, 0.004, -0.1, 0.1])
def test_planes_a_little_off_their_slices_keep_them(error_mm: float) -> None:
    """Planes on slices 2..5 (2.5 mm) written with an error up to 4 % of the step: slices 2..5 exactly."""
    grid = Volume(np.zeros((10, 10, 10), dtype=bool), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0))
    contours = [_square(2.5 * k + error_mm) for k in range(2, 6)]
    assert list(np.flatnonzero(rasterise(contours, grid).any(axis=(0, 1)))) == [2, 3, 4, 5]
    lone = rasterise([_square(2.5 * 4 + error_mm)], grid)
    assert list(np.flatnonzero(lone.any(axis=(0, 1)))) == [4]


@pytest.mark.parametrize("error_mm", [-0.004, 0.0, 0.004])
def test_planes_between_slices_take_the_slices_between_first_and_last(error_mm: float) -> None:
    """Planes halfway between 2.5 mm CT slices (at 6.25, 8.75, 11.25 mm): the slices at 7.5 and 10 mm,
    each from the plane above it, whatever the rounding; the TPS's span [6.25, 11.25] mm."""
    grid = Volume(np.zeros((10, 10, 10), dtype=bool), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0))
    contours = [_square(z + error_mm, half) for z, half in ((6.25, 1.5), (8.75, 2.5), (11.25, 3.5))]
    mask = rasterise(contours, grid)
    assert list(np.flatnonzero(mask.any(axis=(0, 1)))) == [3, 4]
    assert mask[:, :, 3].sum() == rasterise([contours[1]], grid)[:, :, 3].sum()  # 7.5 mm from the plane above
    assert mask[:, :, 4].sum() == rasterise([contours[2]], grid)[:, :, 4].sum()


def test_contours_of_one_plane_written_a_little_apart_stay_one_plane() -> None:
    """Two islands of one plane, z written 0.004 mm apart: one plane (both kept), not two half-slabs."""
    grid = Volume(np.zeros((20, 10, 10), dtype=bool), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0))
    left = [_square(2.5 * k) for k in range(2, 5)]
    right = [_square(2.5 * k + 0.004) + np.array([10.0, 0.0, 0.0]) for k in range(2, 5)]
    mask = rasterise(left + right, grid)
    assert list(np.flatnonzero(mask[:10].any(axis=(0, 1)))) == [2, 3, 4]
    assert list(np.flatnonzero(mask[10:].any(axis=(0, 1)))) == [2, 3, 4]


def _area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_contours_of_a_mask_have_its_area_and_survive_rounding() -> None:
    """Voxel-boundary polygons: their even-odd area is the voxel count (a TPS gets the mask's volume), diagonal
    neighbours are separate polygons, and coordinates moved by up to 0.2 voxel (each point as rounding moves it)
    still fill back exactly."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        mask = rng.random((31, 27)) > 0.5
        polygons = mask_polygons(mask)
        assert sum(_area(p) for p in polygons) == mask.sum()  # holes run the other way round: negative area
        points = np.unique(np.concatenate(polygons), axis=0)  # one shift per point, as rounding moves it
        shifts = dict(zip(map(tuple, points), rng.uniform(-0.2, 0.2, points.shape), strict=True))
        noisy = [np.array([p + shifts[tuple(p)] for p in polygon]) for polygon in polygons]
        assert np.array_equal(fill_polygons(noisy, mask.shape), mask)
    diagonal = np.zeros((4, 4), dtype=bool)
    diagonal[1, 1] = diagonal[2, 2] = True
    assert [len(p) for p in mask_polygons(diagonal)] == [4, 4]


def _ring(shape: tuple[int, int], outer: float, inner: float, centre: tuple[float, float]) -> np.ndarray:
    x, y = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    r = np.hypot(x - centre[0], y - centre[1])
    return (r <= outer) & (r > inner)


def test_holes_are_keyholes_filled_alike_by_every_rule() -> None:
    """A ring is one keyhole polygon (no nested contour for a reader to fill); a ring holding an island holding a
    hole: two polygons. Filled by even-odd or by filling every polygon (union), the same voxels."""
    ring = _ring((40, 40), 15, 6, (20, 20))
    polygons = mask_polygons(ring)
    assert len(polygons) == 1 and _area(polygons[0]) == ring.sum()
    nested = ring | _ring((40, 40), 4, 1.5, (20, 20))
    polygons = mask_polygons(nested)
    assert len(polygons) == 2
    union = np.zeros(nested.shape, dtype=bool)
    for polygon in polygons:
        union |= fill_polygons([polygon], nested.shape)
    assert np.array_equal(fill_polygons(polygons, nested.shape), nested) and np.array_equal(union, nested)
