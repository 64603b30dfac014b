"""NRRD volumes, Slicer .seg.nrrd segmentations and patient folders: round trips and bad files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nrrd
import numpy as np
import pytest
import slicerio

from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import (
    read_dose,
    read_mask,
    read_patient,
    read_segmentation,
    read_volume,
    write_patient,
    write_segmentation,
    write_volume,
)


def rotation(axis: int, degrees: float) -> np.ndarray:
    """A right-handed rotation matrix about LPS axis 0, 1 or 2."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [n for n in range(3) if n != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


OBLIQUE = rotation(2, 30.0) @ rotation(0, -20.0)


def assert_same_volume(actual: Volume, expected: Volume) -> None:
    assert actual.same_grid(expected, tol=1e-6)
    np.testing.assert_array_equal(actual.array, expected.array)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_volume_round_trip_keeps_voxels_and_oblique_geometry(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    volume = Volume((rng.random((5, 6, 7)) * 100).astype(dtype), (0.8, 1.2, 2.5), (-10.0, 20.5, 33.0), OBLIQUE)
    write_volume(tmp_path / "v.nrrd", volume)
    read = read_volume(tmp_path / "v.nrrd")
    assert read.array.dtype == dtype
    assert_same_volume(read, volume)


def test_ras_header_is_converted_to_lps(tmp_path: Path) -> None:
    header = {
        "space": "right-anterior-superior",
        "space directions": np.diag([2.0, 3.0, 4.0]),
        "space origin": np.array([10.0, 20.0, 30.0]),
    }
    nrrd.write(str(tmp_path / "ras.nrrd"), np.zeros((2, 3, 4), np.int16), header)
    volume = read_volume(tmp_path / "ras.nrrd")
    assert volume.spacing == (2.0, 3.0, 4.0)
    assert volume.origin == (-10.0, -20.0, 30.0)
    np.testing.assert_allclose(volume.direction, np.diag([-1.0, -1.0, 1.0]))


def test_header_without_space_uses_spacings(tmp_path: Path) -> None:
    nrrd.write(str(tmp_path / "plain.nrrd"), np.zeros((2, 3, 4), np.int16), {"spacings": [1.5, 2.0, 3.0]})
    volume = read_volume(tmp_path / "plain.nrrd")
    assert volume.spacing == (1.5, 2.0, 3.0) and volume.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(volume.direction, np.eye(3))


def _overlapping_masks() -> dict[str, Volume]:
    grid = Volume(np.zeros((12, 10, 8), bool), (1.0, 1.5, 3.0), (5.0, -7.0, 12.0), OBLIQUE)
    first, second, third = (np.zeros(grid.shape, bool) for _ in range(3))
    first[2:8, 2:7, 1:6] = True
    second[5:11, 4:9, 3:8] = True  # overlaps the first
    third[0, 0, 0] = True
    return {"PTV70": grid.with_array(first), "Brainstem": grid.with_array(second), "Larynx": grid.with_array(third)}


def test_segmentation_round_trip_keeps_names_voxels_geometry_and_overlaps(tmp_path: Path) -> None:
    masks = _overlapping_masks()
    path = tmp_path / "structures.seg.nrrd"
    write_segmentation(path, masks, colors={"PTV70": (1.0, 0.0, 0.0)})
    read = read_segmentation(path)
    assert list(read) == list(masks)
    for name, mask in masks.items():
        assert read[name].array.dtype == bool
        assert_same_volume(read[name], mask)
    assert np.any(read["PTV70"].array & read["Brainstem"].array)
    segments = {s["name"]: s for s in slicerio.read_segmentation(str(path), skip_voxels=True)["segments"]}
    assert segments["PTV70"]["color"] == [1.0, 0.0, 0.0]


def test_slicer_single_layer_segmentation_is_read_with_mapped_names(tmp_path: Path) -> None:
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[4, 4, 3] = 2
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.diag([-1.0, -1.0, 1.0]) * [2.0, 2.0, 3.0]
    ijk_to_lps[:3, 3] = [1.0, 2.0, 3.0]
    segments = [
        {"id": "Segment_1", "name": "Parotid_L", "labelValue": 1, "layer": 0},
        {"id": "Segment_2", "name": "Bone_Mandible", "labelValue": 2, "layer": 0},
    ]
    path = tmp_path / "slicer.seg.nrrd"
    slicerio.write_segmentation(str(path), {"voxels": labels, "ijkToLPS": ijk_to_lps, "segments": segments})
    read = read_segmentation(path)
    assert list(read) == ["LeftParotid", "Mandible"]
    np.testing.assert_array_equal(read["LeftParotid"].array, labels == 1)
    np.testing.assert_array_equal(read["Mandible"].array, labels == 2)
    np.testing.assert_allclose(read["Mandible"].index_to_lps, ijk_to_lps)


def test_segmentation_with_empty_segment_names_file_and_segment(tmp_path: Path) -> None:
    grid = Volume(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    path = tmp_path / "empty.seg.nrrd"
    segments = [{"id": "s", "name": "Larynx", "labelValue": 1, "layer": 0}]
    slicerio.write_segmentation(str(path), {"voxels": grid.array, "ijkToLPS": grid.index_to_lps, "segments": segments})
    with pytest.raises(DoseSegError, match=r"empty\.seg\.nrrd: segment 'Larynx' is empty"):
        read_segmentation(path)


def test_segmentation_needs_one_grid(tmp_path: Path) -> None:
    masks = _overlapping_masks()
    masks["Larynx"] = Volume(masks["Larynx"].array, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="share one grid"):
        write_segmentation(tmp_path / "x.seg.nrrd", masks)


def test_phantom_folder_reads_as_cropped_case(phantom_dir: Path, phantom_case: Case) -> None:
    case = read_patient(phantom_dir)
    assert case.name == "phantom" and case.source == phantom_dir
    assert set(case.structures) == {*OARS, "PTV56", "PTV70"}
    assert case.targets == {"PTV70": 70.0, "PTV56": 56.0}
    assert_same_volume(case.ct, phantom_case.ct)
    assert_same_volume(case.possible_dose_mask, phantom_case.possible_dose_mask)
    assert case.dose.array.dtype == np.float32
    assert all(mask.array.dtype == bool for mask in case.structures.values())
    assert all(np.prod(mask.shape) < np.prod(case.ct.shape) for mask in case.structures.values())
    assert case.dose.shape != case.ct.shape


def test_patient_round_trip(tmp_path: Path, phantom_case: Case) -> None:
    write_patient(tmp_path, phantom_case)
    case = read_patient(tmp_path)
    for name, mask in phantom_case.structures.items():
        assert_same_volume(case.structures[name], mask)
    assert_same_volume(case.dose, phantom_case.dose)


def test_patient_from_segmentation_file(tmp_path: Path, phantom_case: Case) -> None:
    write_volume(tmp_path / "ct.nrrd", phantom_case.ct)
    write_segmentation(tmp_path / "segmentation.seg.nrrd", phantom_case.structures)
    case = read_patient(tmp_path)
    assert list(case.structures) == list(phantom_case.structures)
    assert case.dose is None and case.possible_dose_mask is None
    assert_same_volume(case.structures["Mandible"], phantom_case.structures["Mandible"])


def test_missing_patient_folder(tmp_path: Path) -> None:
    with pytest.raises(DoseSegError, match="nowhere: patient folder not found"):
        read_patient(tmp_path / "nowhere")


def _save(path: Path, array: np.ndarray, header: dict | None = None) -> None:
    nrrd.write(str(path), array, header or {"space": "left-posterior-superior"})


def _gzip_nrrd(path: Path) -> bytes:
    _save(path, np.arange(20 * 20 * 20, dtype=np.int16).reshape(20, 20, 20))
    return path.read_bytes()


def _corrupt(path: Path) -> None:
    data = bytearray(_gzip_nrrd(path))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


BAD_FILES: dict[str, tuple[Callable[[Path], object], Callable[[Path], Volume], str]] = {
    "missing": (lambda p: None, read_volume, "file not found"),
    "empty": (lambda p: p.write_bytes(b""), read_volume, "unreadable or truncated NRRD"),
    "not_nrrd": (lambda p: p.write_text("hello\n"), read_volume, "unreadable or truncated NRRD"),
    "truncated": (lambda p: p.write_bytes(_gzip_nrrd(p)[:-200]), read_volume, "unreadable or truncated NRRD"),
    "corrupted": (_corrupt, read_volume, "unreadable or truncated NRRD"),
    "header_only": (lambda p: p.write_bytes(_gzip_nrrd(p)[:120]), read_volume, "unreadable or truncated NRRD"),
    "2d": (lambda p: _save(p, np.zeros((4, 4), np.int16)), read_volume, "expected a 3D image, found 2D"),
    "4d": (lambda p: _save(p, np.zeros((2, 4, 4, 4), np.int16)), read_volume, "expected a 3D image, found 4D"),
    "nan": (lambda p: _save(p, np.full((3, 3, 3), np.nan, np.float32)), read_volume, "NaN"),
    "inf": (lambda p: _save(p, np.full((3, 3, 3), np.inf, np.float64)), read_dose, "infinite"),
    "empty_mask": (lambda p: _save(p, np.zeros((3, 3, 3), np.uint8)), read_mask, "structure is empty"),
    "negative_dose": (lambda p: _save(p, -np.ones((3, 3, 3), np.float32)), read_dose, "negative values"),
    "scanner_space": (
        lambda p: _save(p, np.zeros((3, 3, 3), np.int16), {"space": "scanner-xyz"}),
        read_volume,
        "unsupported NRRD space",
    ),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_gives_one_line_error_naming_file_and_problem(tmp_path: Path, kind: str) -> None:
    make, reader, problem = BAD_FILES[kind]
    path = tmp_path / f"{kind}.nrrd"
    make(path)
    with pytest.raises(DoseSegError) as info:
        reader(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and problem in message
    assert "\n" not in message


def test_patient_folders_are_listed_in_natural_order_everywhere(tmp_path) -> None:
    from DoseSegLib.io.listing import patient_folders, subfolders

    for name in ("pt_10", "pt_2", "pt_1", "notes"):
        (tmp_path / name).mkdir()
        if name != "notes":
            (tmp_path / name / "ct.nrrd").write_bytes(b"")
    assert [p.name for p in patient_folders(tmp_path)] == ["pt_1", "pt_2", "pt_10"]
    assert [p.name for p in patient_folders(tmp_path, limit=2)] == ["pt_1", "pt_2"]
    assert [p.name for p in subfolders(tmp_path)] == ["notes", "pt_1", "pt_2", "pt_10"]
    with pytest.raises(DoseSegError, match="no patient folder"):
        patient_folders(tmp_path / "notes")


def test_segmentation_shares_layers_between_separate_structures(tmp_path: Path) -> None:
    """Nested and overlapping structures get layers of their own, separate ones share: every mask reads back exact."""
    grid = Volume(np.zeros((20, 18, 16), np.int16), (2.0, 2.0, 3.0), (-10.0, 5.0, 0.0))
    masks = {name: np.zeros(grid.shape, bool) for name in ("PTV70", "PTV56", "Brainstem", "SpinalCord", "Larynx")}
    masks["PTV56"][2:12, 2:12, 2:12] = True
    masks["PTV70"][4:8, 4:8, 4:8] = True  # inside PTV56
    masks["Brainstem"][14:18, 1:5, 1:5] = True  # apart from both
    masks["SpinalCord"][14:18, 10:16, 0:16] = True
    masks["Larynx"][6:15, 6:9, 6:9] = True  # overlaps both PTVs: a third layer
    write_segmentation(tmp_path / "s.seg.nrrd", {n: grid.with_array(m) for n, m in masks.items()})
    layers = {s["name"]: (s["layer"], s["labelValue"])
              for s in slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"), skip_voxels=True)["segments"]}
    assert len({layer for layer, _ in layers.values()}) == 3 and len(set(layers.values())) == len(masks)
    back = read_segmentation(tmp_path / "s.seg.nrrd")
    for name, mask in masks.items():
        assert back[name].same_grid(grid) and np.array_equal(back[name].array, mask), name
