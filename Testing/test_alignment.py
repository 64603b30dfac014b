"""Alignment onto the CT grid: exact placement, oblique geometry against SimpleITK, clipping, body mask."""

from __future__ import annotations

import logging
from pathlib import Path

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from DoseSegLib.core.alignment import align_case, align_structure, body_mask, resample, resample_mask
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_patient

ROTATION = np.array(  # 30 degrees about S, then -20 degrees about L: a proper rotation
    [[0.8660254, -0.4698463, -0.1710101], [0.5, 0.8137977, 0.2961981], [0.0, -0.3420201, 0.9396926]]
)


def sitk_image(array: np.ndarray, spacing, origin, direction: np.ndarray) -> sitk.Image:
    """A SimpleITK image built directly (SimpleITK arrays are indexed [k, j, i])."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection(np.asarray(direction, float).flatten().tolist())
    return image


def oblique_volume(array: np.ndarray) -> Volume:
    return Volume(array, (1.5, 2.0, 2.5), (-12.0, 4.0, -20.0), ROTATION)


def target_grid() -> Volume:
    """An axis-aligned 2 mm grid covering the oblique volume and more."""
    return Volume(np.zeros((40, 40, 40), np.int16), (2.0, 2.0, 2.0), (-50.0, -30.0, -45.0))


def test_rotation_is_proper() -> None:
    np.testing.assert_allclose(ROTATION @ ROTATION.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(ROTATION) == pytest.approx(1.0, abs=1e-6)


def test_index_to_lps_matches_simpleitk() -> None:
    volume = oblique_volume(np.zeros((20, 18, 16), np.float32))
    image = sitk_image(volume.array, volume.spacing, volume.origin, ROTATION)
    for index in [(0, 0, 0), (7, 5, 9), (19, 17, 15)]:
        expected = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose((volume.index_to_lps @ np.append(index, 1.0))[:3], expected, atol=1e-9)


def test_sitk_conversion_round_trip_keeps_geometry() -> None:
    volume = oblique_volume(np.arange(20 * 18 * 16, dtype=np.float32).reshape(20, 18, 16))
    back = Volume.from_sitk(volume.to_sitk())
    assert back.same_grid(volume, tol=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_oblique_resampling_matches_simpleitk(interpolation: str) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(3)
    values = ndimage.gaussian_filter(rng.random((20, 18, 16)), 2.0).astype(np.float32) * 100
    if interpolation == "nearest":
        values = np.round(values).astype(np.int16)
    source = oblique_volume(values)
    grid = target_grid()
    mode = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[interpolation]
    reference = sitk.Resample(
        sitk_image(values.astype(np.float32), source.spacing, source.origin, ROTATION),
        sitk_image(grid.array, grid.spacing, grid.origin, np.eye(3)),
        sitk.Transform(),
        mode,
        -1.0,
        sitk.sitkFloat32,
    )
    expected = sitk.GetArrayFromImage(reference).transpose(2, 1, 0)
    result = resample(source, grid, interpolation, fill=-1.0)
    assert result.same_grid(grid)
    assert (expected > -1).sum() > 1000  # the volumes really overlap
    np.testing.assert_allclose(result.array, expected, atol=1e-4)


def test_oblique_point_lands_at_its_physical_position() -> None:
    values = np.zeros((20, 18, 16), np.float32)
    index = np.array([7, 5, 9])
    values[tuple(index)] = 1.0
    source = oblique_volume(values)
    point = np.asarray(source.origin) + ROTATION @ (np.asarray(source.spacing) * index)
    target = np.array([10, 10, 10])
    grid = Volume(np.zeros((21, 21, 21), np.int16), (1.0, 1.0, 1.0), tuple(point - target))
    result = resample(source, grid, "linear").array
    assert result[tuple(target)] == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(np.argmax(result), result.shape) == tuple(target)
    assert np.sort(result.ravel())[-2] < 0.9


def test_oblique_mask_alignment_matches_simpleitk() -> None:
    mask = np.zeros((20, 18, 16), bool)
    mask[4:15, 3:12, 5:13] = True
    source = oblique_volume(mask)
    grid = target_grid()
    reference = sitk.Resample(
        sitk_image(mask.astype(np.float32), source.spacing, source.origin, ROTATION),
        sitk_image(grid.array, grid.spacing, grid.origin, np.eye(3)),
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    expected = sitk.GetArrayFromImage(reference).transpose(2, 1, 0) >= 0.5
    aligned = align_structure("Oblique", source, grid)
    np.testing.assert_array_equal(aligned.array, expected)
    assert aligned.array.sum() == pytest.approx(mask.sum() * source.voxel_volume_cc / grid.voxel_volume_cc, rel=0.1)


def test_shared_voxel_centres_are_copied_exactly() -> None:
    grid = Volume(np.zeros((10, 10, 10), np.int16), (2.0, 3.0, 4.0), (-9.0, -13.5, -18.0))
    values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 0.25
    offset = (3, 2, 1)
    origin = tuple(o + s * n for o, s, n in zip(grid.origin, grid.spacing, offset))
    result = resample(Volume(values, grid.spacing, origin), grid, fill=-5.0).array
    expected = np.full(grid.shape, -5.0, np.float32)
    expected[3:7, 2:7, 1:7] = values
    np.testing.assert_array_equal(result, expected)


def test_phantom_folder_aligns_back_to_the_phantom(phantom_dir: Path, phantom_case: Case) -> None:
    aligned = align_case(read_patient(phantom_dir))
    assert set(aligned.structures) == set(phantom_case.structures)
    for name, mask in phantom_case.structures.items():
        assert aligned.structures[name].same_grid(phantom_case.ct), name
        np.testing.assert_array_equal(aligned.structures[name].array, mask.array, err_msg=name)
    assert aligned.dose.array.dtype == np.float32
    np.testing.assert_array_equal(aligned.dose.array, phantom_case.dose.array)
    np.testing.assert_array_equal(aligned.possible_dose_mask.array, phantom_case.possible_dose_mask.array)


def test_phantom_anatomy_follows_lps(phantom_case: Case) -> None:
    def centre(name: str) -> np.ndarray:
        mask = phantom_case.structures[name]
        return (mask.index_to_lps[:3, :3] @ np.argwhere(mask.array).mean(axis=0)) + mask.origin

    assert centre("LeftParotid")[0] > 0 > centre("RightParotid")[0]
    assert centre("SpinalCord")[1] > centre("Esophagus")[1] > centre("Larynx")[1]
    assert centre("Brainstem")[2] > centre("SpinalCord")[2]
    dose = phantom_case.dose.array
    assert dose[phantom_case.structures["PTV70"].array].mean() == pytest.approx(70.0, abs=1.0)
    assert dose[~phantom_case.possible_dose_mask.array].max() == 0.0
    assert dose[phantom_case.structures["Brainstem"].array].mean() < 30.0


def _ct_grid() -> Volume:
    return Volume(np.zeros((64, 32, 32), np.int16), (3.9, 3.9, 2.5), (-122.85, -60.45, -38.75))


def test_structure_partly_outside_is_clipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    ct = _ct_grid()
    origin = ct.index_to_lps @ np.array([60, 10, 10, 1.0])
    mask = Volume(np.ones((10, 4, 4), bool), ct.spacing, tuple(origin[:3]))
    with caplog.at_level(logging.WARNING, logger="DoseSegLib.core.alignment"):
        aligned = align_structure("LeftParotid", mask, ct)
    expected = np.zeros(ct.shape, bool)
    expected[60:64, 10:14, 10:14] = True
    np.testing.assert_array_equal(aligned.array, expected)
    assert any("LeftParotid" in r.message and "60.0%" in r.message and "clipped" in r.message for r in caplog.records)


def test_structure_inside_gives_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    ct = _ct_grid()
    with caplog.at_level(logging.WARNING):
        align_structure("Larynx", Volume(np.ones((2, 2, 2), bool), ct.spacing, ct.origin), ct)
    assert not caplog.records


def test_structure_without_overlap_is_an_error_naming_it() -> None:
    ct = _ct_grid()
    mask = Volume(np.ones((3, 3, 3), bool), ct.spacing, (500.0, 0.0, 0.0))
    with pytest.raises(DoseSegError, match="'Esophagus' does not overlap the CT"):
        align_structure("Esophagus", mask, ct)


def test_body_mask_is_derived_without_possible_dose_mask(phantom_dir: Path, phantom_case: Case) -> None:
    (phantom_dir / "possible_dose_mask.nrrd").unlink()
    case = read_patient(phantom_dir)
    assert case.possible_dose_mask is None
    aligned = align_case(case)
    np.testing.assert_array_equal(aligned.possible_dose_mask.array, phantom_case.possible_dose_mask.array)


def _slice_by_slice_body(ct: Volume) -> np.ndarray:
    """The reference: scipy's largest component, then binary_fill_holes on each axial slice."""
    from scipy import ndimage

    labels, _ = ndimage.label(ct.array > -400)
    body = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return np.stack([ndimage.binary_fill_holes(body[:, :, k]) for k in range(ct.shape[2])], axis=2)


@pytest.mark.parametrize("order", ["C", "F"])
def test_body_mask_equals_slice_by_slice_hole_filling(order: str) -> None:
    """A noisy body touching the grid's edge, a lung open to the edge in some slices and closed in others,
    a tube, a couch apart from the body: the same mask as filling each slice on the whole grid."""
    rng = np.random.default_rng(3)
    x, y, z = np.meshgrid(np.arange(60), np.arange(50), np.arange(24), indexing="ij")
    hu = np.where(((x - 30) / 31.0) ** 2 + ((y - 25) / 18.0) ** 2 <= 1, 40, -1000)  # wider than the grid
    hu[((x - 20) / 8.0) ** 2 + ((y - 25) / 6.0) ** 2 <= 1] = -800  # a lung: a hole
    hu[(x < 20) & (abs(y - 25) <= 1) & (z < 8)] = -800  # opened to the edge in the first 8 slices
    hu[(abs(x - 42) <= 1) & (abs(y - 25) <= 1)] = -1000  # a tube through every slice
    hu[:, 46:, :] = np.where(x[:, 46:, :] % 7 == 0, 300, -1000)[:, :, :]  # couch bars apart from the body
    hu += rng.normal(0, 150, hu.shape).astype(int)
    ct = Volume(np.asarray(hu, np.int16, order=order), (1.2, 1.0, 2.5), (-3.0, 4.0, 5.0))
    body = body_mask(ct)
    assert body.same_grid(ct)
    assert np.array_equal(body.array, _slice_by_slice_body(ct))
    assert not body.array[20, 25, 3] and body.array[20, 25, 20]  # the lung filled only where closed


def test_body_mask_needs_tissue() -> None:
    ct = _ct_grid()
    with pytest.raises(DoseSegError, match="body mask"):
        body_mask(ct.with_array(np.full(ct.shape, -1000, np.int16)))


def test_resample_mask_on_same_grid_is_identity(phantom_case: Case) -> None:
    mask = phantom_case.structures["Mandible"]
    np.testing.assert_array_equal(resample_mask(mask, phantom_case.ct).array, mask.array)


def _placed(path: Path, ct_header: dict, ct_shape: tuple[int, ...]) -> np.ndarray:
    """The stored cropped file pasted onto the CT grid at the integer offset given by its header."""
    data, header = nrrd.read(str(path))
    spacing = np.diag(ct_header["space directions"])
    assert np.allclose(header["space directions"], ct_header["space directions"]), path
    position = (header["space origin"] - ct_header["space origin"]) / spacing
    offset = np.round(position).astype(int)
    assert np.allclose(position, offset, atol=1e-3), path
    assert np.all(offset >= 0) and np.all(offset + data.shape <= ct_shape), path
    placed = np.zeros(ct_shape, data.dtype)
    placed[tuple(slice(o, o + n) for o, n in zip(offset, data.shape))] = data
    return placed


@pytest.mark.slow
def test_every_validation_patient_aligns_exactly(shared_data: Path) -> None:
    patients = sorted((shared_data / "openkbp" / "validation").glob("pt_*"))
    assert len(patients) == 33
    for folder in patients:
        ct_header = nrrd.read_header(str(folder / "ct.nrrd"))
        ct_shape = tuple(ct_header["sizes"])
        aligned = align_case(read_patient(folder))
        structure_files = sorted((folder / "structures").glob("*.nrrd"))
        assert sorted(aligned.structures) == sorted(p.stem for p in structure_files), folder.name
        for path in structure_files:
            expected = _placed(path, ct_header, ct_shape) > 0
            np.testing.assert_array_equal(aligned.structures[path.stem].array, expected, err_msg=str(path))
        np.testing.assert_array_equal(aligned.dose.array, _placed(folder / "dose.nrrd", ct_header, ct_shape))
        possible, _ = nrrd.read(str(folder / "possible_dose_mask.nrrd"))
        np.testing.assert_array_equal(aligned.possible_dose_mask.array, possible > 0, err_msg=folder.name)
        np.testing.assert_allclose(aligned.ct.origin, ct_header["space origin"], err_msg=folder.name)


def _full_sitk(volume, grid, interpolation, fill):
    """SimpleITK over the whole grid: the reference for the box-limited resampling."""
    mode = sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor
    source = volume.to_sitk()
    if interpolation == "linear":
        source = sitk.Cast(source, sitk.sitkFloat32)
    return Volume.from_sitk(sitk.Resample(source, grid.to_sitk(), sitk.Transform(), mode, fill)).array


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_resampling_over_the_covered_box_equals_the_whole_grid(interpolation):
    """Finer, rotated, partly outside: the box-limited resampling gives SimpleITK's whole-grid values."""
    rng = np.random.default_rng(3)
    angle = np.deg2rad(7)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    source = Volume(rng.normal(100, 30, (14, 11, 9)).astype(np.float32), (2.0, 2.5, 3.0), (-5.0, 3.0, -4.0), rotation)
    grid = Volume(np.zeros((40, 36, 30), np.int16), (1.1, 1.1, 1.25), (-20.0, -12.0, -15.0))
    expected = _full_sitk(source, grid, interpolation, -7.0)
    assert np.array_equal(resample(source, grid, interpolation, -7.0).array, expected)
    blob = source.with_array(source.array > 110)
    expected_mask = _full_sitk(blob.with_array(blob.array.astype(np.float32)), grid, "linear", 0.0) >= 0.5
    assert expected_mask.any() and np.array_equal(resample_mask(blob, grid).array, expected_mask)
    window = Volume(np.zeros((9, 7, 5), np.int16), (3.9, 3.9, 2.5), (-1.0, 6.0, 0.0), rotation.T)
    assert np.array_equal(resample(source, window, interpolation, -7.0).array,
                          _full_sitk(source, window, interpolation, -7.0))  # only the source's part it needs
    far = Volume(source.array, source.spacing, (500.0, 0.0, 0.0))
    assert not resample_mask(far.with_array(far.array > 0), grid).array.any()
    assert np.all(resample(far, grid, interpolation, -7.0).array == -7.0)
