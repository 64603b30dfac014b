"""OpenKBP sparse-CSV import: the axis convention on synthetic files, the real patients against the NRRD copy."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pytest
from openkbp_csv_helpers import CT_VOXELS, DOSE, PAROTID, POSSIBLE, N, flat, lps_index, write_csv

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume, crop_to_content
from DoseSegLib.io.openkbp import read_openkbp_csv


def test_synthetic_csv_patient_follows_the_axis_convention(csv_patient: Path) -> None:
    case = read_openkbp_csv(csv_patient)
    spacing = (2.0, 3.0, 2.5)
    origin = tuple(-s * (N - 1) / 2 for s in spacing)
    assert case.name == "pt_9"
    assert case.ct.shape == (N, N, N) and case.ct.array.dtype == np.int16
    assert case.ct.spacing == spacing and case.ct.origin == pytest.approx(origin)
    np.testing.assert_array_equal(case.ct.direction, np.eye(3))
    expected_ct = np.full((N, N, N), -1000, np.int16)
    for voxel, value in CT_VOXELS.items():
        if value > 0:
            expected_ct[lps_index(*voxel)] = value - 1000
    np.testing.assert_array_equal(case.ct.array, expected_ct)
    assert case.possible_dose_mask.same_grid(case.ct)
    assert sorted(map(tuple, np.argwhere(case.possible_dose_mask.array))) == sorted(lps_index(*v) for v in POSSIBLE)


def _expected_crop(voxels: list[tuple[int, int, int]], spacing, origin) -> tuple[np.ndarray, np.ndarray]:
    """Low corner (LPS index) and origin of the box around ``voxels``."""
    lo = np.min([lps_index(*v) for v in voxels], axis=0)
    return lo, np.asarray(origin) + lo * np.asarray(spacing)


def test_structures_and_dose_are_cropped_to_their_boxes(csv_patient: Path) -> None:
    case = read_openkbp_csv(csv_patient)
    assert list(case.structures) == ["LeftParotid"]
    parotid = case.structures["LeftParotid"]
    lo, origin = _expected_crop(PAROTID, case.ct.spacing, case.ct.origin)
    np.testing.assert_allclose(parotid.origin, origin)
    assert parotid.shape == (4, 3, 3)
    assert sorted(map(tuple, np.argwhere(parotid.array) + lo)) == sorted(lps_index(*v) for v in PAROTID)
    lo, origin = _expected_crop(POSSIBLE, case.ct.spacing, case.ct.origin)
    assert case.dose.array.dtype == np.float32
    np.testing.assert_allclose(case.dose.origin, origin)
    for voxel, value in DOSE.items():
        assert case.dose.array[tuple(np.asarray(lps_index(*voxel)) - lo)] == value
    assert case.dose.array.sum() == pytest.approx(sum(DOSE.values()))


def test_missing_ct_csv_is_an_error(csv_patient: Path) -> None:
    (csv_patient / "ct.csv").unlink()
    with pytest.raises(DoseSegError, match=r"ct\.csv: file not found"):
        read_openkbp_csv(csv_patient)


@pytest.mark.parametrize(
    "text, problem",
    [
        (",data\nabc,1\n", "not an OpenKBP sparse CSV"),
        (",data\n5,1\n6,high\n", "not an OpenKBP sparse CSV"),
        (",data\n5,nan\n", "contains NaN"),
        (f",data\n{N**3},1\n", "index outside the 128"),
        (",data\n-1,1\n", "index outside the 128"),
    ],
)
def test_bad_csv_names_the_file(csv_patient: Path, text: str, problem: str) -> None:
    (csv_patient / "dose.csv").write_text(text)
    with pytest.raises(DoseSegError, match=rf"dose\.csv: {problem}"):
        read_openkbp_csv(csv_patient)


def test_empty_structure_csv_is_an_error(csv_patient: Path) -> None:
    write_csv(csv_patient / "Larynx.csv", [])
    with pytest.raises(DoseSegError, match=r"Larynx\.csv: structure is empty"):
        read_openkbp_csv(csv_patient)


def test_negative_dose_csv_is_an_error(csv_patient: Path) -> None:
    write_csv(csv_patient / "dose.csv", [flat(*v) for v in DOSE], [70.5, -2.0])
    with pytest.raises(DoseSegError, match=r"dose\.csv: dose has negative values \(min -2\)"):
        read_openkbp_csv(csv_patient)


def test_bad_voxel_dimensions_names_the_file(csv_patient: Path) -> None:
    (csv_patient / "voxel_dimensions.csv").write_text("three\n")
    with pytest.raises(DoseSegError, match=r"voxel_dimensions\.csv: unreadable"):
        read_openkbp_csv(csv_patient)


def test_crop_to_content_moves_origin_along_oblique_axes() -> None:
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    volume = Volume(np.zeros((6, 7, 8), np.float32), (1.0, 2.0, 3.0), (10.0, 20.0, 30.0), direction)
    volume.array[2:4, 3, 5:7] = 1.0
    cropped = crop_to_content(volume, volume.array > 0)
    assert cropped.shape == (2, 1, 2)
    np.testing.assert_allclose(cropped.origin, (10.0 - 6.0, 20.0 + 2.0, 30.0 + 15.0))
    np.testing.assert_array_equal(cropped.direction, direction)


def test_crop_to_nothing_keeps_the_volume() -> None:
    volume = Volume(np.zeros((2, 2, 2), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert crop_to_content(volume, volume.array > 0) is volume


def assert_matches_nrrd(volume: Volume, path: Path) -> None:
    """Voxels and geometry of ``volume`` equal the NRRD file's, read with pynrrd."""
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior", path
    np.testing.assert_array_equal(volume.array, data, err_msg=str(path), strict=True)
    np.testing.assert_allclose(volume.origin, header["space origin"], atol=1e-6, err_msg=str(path))
    np.testing.assert_allclose(volume.direction * np.asarray(volume.spacing), header["space directions"].T, atol=1e-9)


@pytest.mark.parametrize("split, patient", [("train", "pt_1"), ("validation", "pt_201")])
def test_csv_import_equals_the_nrrd_copy(shared_data: Path, split: str, patient: str) -> None:
    csv_folder = shared_data / "openkbp-csv" / patient
    if not csv_folder.is_dir():
        pytest.skip(f"{csv_folder} is absent")
    nrrd_folder = shared_data / "openkbp" / split / patient
    case = read_openkbp_csv(csv_folder)
    assert_matches_nrrd(case.ct, nrrd_folder / "ct.nrrd")
    assert_matches_nrrd(case.dose, nrrd_folder / "dose.nrrd")
    assert_matches_nrrd(case.possible_dose_mask, nrrd_folder / "possible_dose_mask.nrrd")
    assert sorted(case.structures) == sorted(p.stem for p in (nrrd_folder / "structures").glob("*.nrrd"))
    for name, mask in case.structures.items():
        assert_matches_nrrd(mask, nrrd_folder / "structures" / f"{name}.nrrd")
