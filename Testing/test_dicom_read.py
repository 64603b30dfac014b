"""DICOM-RT in: phantom round trip, the rasteriser against geometry, pydicom's own files, DICOMDIR."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import dose_scaling, write_dicom_patient
from pydicom.data import get_testdata_file

from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.contours import mask_polygons
from DoseSegLib.io.dicom.rasterise import fill_polygons, rasterise, subvoxel_grid
from DoseSegLib.io.dicom.rtdose import read_rtdose
from DoseSegLib.io.dicom.rtplan import read_prescriptions
from DoseSegLib.io.dicom.rtstruct import read_rois
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.phantom import make_phantom


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dicom_patient(tmp_path_factory.mktemp("dicom") / "phantom", make_phantom())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_phantom_round_trip_gives_the_same_case(phantom_dicom: Path) -> None:
    case, back = make_phantom(), read_patient(phantom_dicom)
    assert back.ct.same_grid(case.ct) and np.array_equal(back.ct.array, case.ct.array)
    assert back.ct.array.dtype == np.int16  # RescaleIntercept -1024 applied, integral HU kept as integers
    assert set(back.structures) == set(case.structures)
    for name, mask in case.structures.items():
        assert back.structures[name].same_grid(case.ct)
        assert dice(back.structures[name].array, mask.array) >= 0.98, name
    assert np.array_equal(back.possible_dose_mask.array, case.possible_dose_mask.array)  # the EXTERNAL ROI
    assert back.dose.same_grid(case.dose)
    assert np.abs(back.dose.array - case.dose.array).max() < dose_scaling(phantom_dicom / "rtdose.dcm")
    assert back.prescriptions == {"PTV70": 70.0, "PTV56": 56.0} and back.prescription == 70.0


def test_names_go_through_the_name_mapping(tmp_path: Path) -> None:
    case = make_phantom()
    aliases = {"Parotid_L": "LeftParotid", "Bone_Mandible": "Mandible", "PTV_70": "PTV70"}
    renamed = {alias: case.structures[name] for alias, name in aliases.items()}
    folder = write_dicom_patient(tmp_path / "p", type(case)(case.name, case.ct, renamed))
    assert set(read_patient(folder).structures) == set(aliases.values())


def test_mask_contours_rasterise_back_exactly() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):  # noise masks: holes, islands, diagonal touches (marching-squares saddles)
        mask = rng.random((37, 23)) > 0.55
        assert np.array_equal(fill_polygons(mask_polygons(mask), mask.shape), mask)


def _circle(centre: tuple[float, float], radius: float, z: float, n: int = 720) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle), np.full(n, z)])


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float], origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(np.zeros(shape, dtype=bool), spacing, origin)


def test_disc_area_matches_pi_r_squared_and_holes_follow_even_odd() -> None:
    grid = _grid((200, 200, 1), (0.5, 0.5, 2.5))
    disc = rasterise([_circle((50, 50), 30, 0)], grid)
    assert disc.sum() * 0.25 == pytest.approx(np.pi * 30**2, rel=0.005)
    ring = rasterise([_circle((50, 50), 30, 0), _circle((50, 50), 10, 0)], grid)  # inner contour = hole
    assert ring.sum() * 0.25 == pytest.approx(np.pi * (30**2 - 10**2), rel=0.01)
    assert not ring[100, 100, 0] and ring[100, 140, 0]
    islands = rasterise([_circle((20, 20), 5, 0), _circle((80, 80), 5, 0)], grid)
    assert islands.sum() * 0.25 == pytest.approx(2 * np.pi * 25, rel=0.03)


def test_slab_convention_spans_first_to_last_plane() -> None:
    contours = [_circle((10, 10), 4, z) for z in (5.0, 7.5, 10.0)]
    ct = rasterise(contours, _grid((20, 20, 10), (1, 1, 2.5)))
    assert list(np.flatnonzero(ct.any(axis=(0, 1)))) == [2, 3, 4]  # exactly the three contour slices
    fine = rasterise(contours, _grid((20, 20, 40), (1, 1, 0.625), (0, 0, 0.3125)), slab_mm=2.5)
    z = 0.3125 + 0.625 * np.flatnonzero(fine.any(axis=(0, 1)))
    assert z.min() >= 5.0 and z.max() <= 10.0 and len(z) == 8  # from the first to the last plane, no further
    half_steps = rasterise(contours, _grid((20, 20, 16), (1, 1, 1.25)))  # centres on the slab boundaries
    assert list(np.flatnonzero(half_steps.any(axis=(0, 1)))) == [4, 5, 6, 7, 8]  # [5, 10] mm
    shifted = rasterise([_circle((10, 10), 4, z) for z in (6.0, 8.5)], _grid((20, 20, 10), (1, 1, 2.5)))
    assert list(np.flatnonzero(shifted.any(axis=(0, 1)))) == [3]  # contours off the CT planes: [6, 8.5] mm
    lone = rasterise([_circle((10, 10), 4, 6.0)], _grid((20, 20, 10), (1, 1, 2.5)), slab_mm=2.5)
    assert list(np.flatnonzero(lone.any(axis=(0, 1)))) == [2]  # one plane keeps its slab [4.75, 7.25)


def _slab_volume(radius: float, planes: np.ndarray, step: float) -> float:
    """Volume of a sphere's contours by the slab convention: full slabs inside, half slabs at both ends."""
    areas = np.pi * (radius**2 - planes**2)
    return float(step * (areas.sum() - (areas[0] + areas[-1]) / 2))


def test_subvoxel_grid_measures_a_small_sphere() -> None:
    radius, step = 4.0, 2.5
    planes = np.arange(-3.75, 3.76, step)
    contours = [_circle((0, 0), np.sqrt(radius**2 - z**2), z) for z in planes if abs(z) < radius]
    slab_volume = _slab_volume(radius, planes, step)  # the TPS's volume
    ct = _grid((16, 16, 6), (2.0, 2.0, step), (-15.0, -15.0, -6.25))
    fine_grid = subvoxel_grid(ct, contours, factor=10)
    assert fine_grid.spacing == (0.2, 0.2, 0.25)
    fine = rasterise(contours, fine_grid, slab_mm=step).sum() * np.prod(fine_grid.spacing)
    assert abs(fine - slab_volume) / slab_volume < 0.015


def test_pydicom_bundled_rt_files_are_read() -> None:
    rois = read_rois(pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True))
    body = next(r for r in rois if r.name == "patient")
    assert body.kind == "EXTERNAL" and len(body.contours) >= 3 and all(r.points == 1 for r in rois[1:])
    points = np.concatenate(body.contours)
    lo, hi = points.min(axis=0), points.max(axis=0)
    grid = _grid((int((hi[0] - lo[0]) / 5) + 3, int((hi[1] - lo[1]) / 5) + 3, int((hi[2] - lo[2]) / 10) + 1),
                 (5.0, 5.0, 10.0), tuple(lo - (5, 5, 0)))
    assert rasterise(body.contours, grid).any(axis=(0, 1)).all()  # a slab on every contour plane
    dose = read_rtdose(get_testdata_file("rtdose.dcm"))
    assert dose.volume.shape == (10, 10, 15) and dose.volume.spacing == (10.0, 10.0, 5.0)
    assert dose.units == "RELATIVE" and dose.summation == "BEAM" and dose.volume.array.max() > 0
    plan = read_prescriptions(pydicom.dcmread(get_testdata_file("rtplan.dcm"), force=True), {})
    assert plan.doses == {"PTV": pytest.approx(30.826203)} and plan.fractions == 30


def test_pydicom_bundled_ct_slice_is_a_patient(tmp_path: Path) -> None:
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "slice")  # no .dcm: detected by content
    case = read_patient(tmp_path)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert case.ct.shape == (128, 128, 1) and case.ct.spacing[0] == pytest.approx(0.661468)
    assert np.array_equal(case.ct.array[:, :, 0], ds.pixel_array.T.astype(np.int16) - 1024)
    assert case.structures == {} and case.dose is None


def test_dicomdir_and_subfolders_are_read(phantom_dicom: Path, tmp_path: Path) -> None:
    from pydicom.fileset import FileSet

    files = FileSet()
    for path in sorted(phantom_dicom.glob("CT*.dcm")):
        files.add(pydicom.dcmread(path))
    files.write(tmp_path / "media")
    assert (tmp_path / "media" / "DICOMDIR").is_file()
    case = read_patient(tmp_path / "media" / "DICOMDIR")
    assert np.array_equal(case.ct.array, make_phantom().ct.array)


def test_non_dicom_files_are_ignored_with_a_warning(phantom_dicom: Path, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "p"
    shutil.copytree(phantom_dicom, folder)
    (folder / "notes.txt").write_text("plan approved by ...\n")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4 " + bytes(300))
    with caplog.at_level(logging.WARNING):
        case = read_patient(folder)
    assert "ignored 2 file(s) that are not DICOM" in caplog.text and len(case.structures) == 9


def test_rtstruct_and_rtdose_files_serve_nrrd_patients(phantom_dicom: Path, phantom_dir: Path, tmp_path: Path) -> None:
    """--segmentation and --dose take DICOM files too (an NRRD CT exported from the same DICOM)."""
    from DoseSegLib.cli.main import main
    from DoseSegLib.io.patient import read_dose

    case = make_phantom()
    back = read_patient(phantom_dir, segmentation=phantom_dicom / "rtstruct.dcm")
    assert set(back.structures) == set(case.structures)
    for name, mask in case.structures.items():
        assert np.array_equal(back.structures[name].array, mask.array), name
    dose = read_dose(phantom_dicom / "rtdose.dcm")
    assert dose.same_grid(case.dose) and np.abs(dose.array - case.dose.array).max() < dose_scaling(
        phantom_dicom / "rtdose.dcm")
    assert main(["dvh", str(phantom_dir), "--dose", str(phantom_dicom / "rtdose.dcm"),
                 "--segmentation", str(phantom_dicom / "rtstruct.dcm"), "-o", str(tmp_path / "dvh")]) == 0
    assert (tmp_path / "dvh" / "dvh_metrics.csv").is_file()


def _flipped(volume: Volume) -> Volume:
    """The same image stored with every axis reversed (direction -I): same physical content."""
    corner = volume.index_to_lps @ np.append(np.asarray(volume.shape) - 1.0, 1.0)
    return Volume(np.ascontiguousarray(volume.array[::-1, ::-1, ::-1]), volume.spacing, tuple(corner[:3]),
                  -volume.direction)


def _centroid(mask: Volume) -> np.ndarray:
    ijk = np.argwhere(mask.array).mean(axis=0)
    return (mask.index_to_lps @ np.append(ijk, 1.0))[:3]


def test_reversed_axes_never_mirror_an_organ(tmp_path: Path) -> None:
    """A series stored right-to-left, anterior-to-posterior and head-to-feet reads back in the same place."""
    from DoseSegLib.core.alignment import resample

    case = make_phantom()
    stored = type(case)(case.name, _flipped(case.ct), {n: _flipped(m) for n, m in case.structures.items()},
                        _flipped(case.dose))
    folder = write_dicom_patient(tmp_path / "p", stored)
    back = read_patient(folder)
    assert np.allclose(back.ct.direction, np.diag([-1.0, -1.0, 1.0]))  # rows and columns as stored, slices sorted
    assert np.array_equal(resample(back.ct, case.ct, "nearest").array, case.ct.array)
    for name, mask in case.structures.items():
        assert np.allclose(_centroid(back.structures[name]), _centroid(mask), atol=1e-6), name
    assert _centroid(back.structures["LeftParotid"])[0] > 0 > _centroid(back.structures["RightParotid"])[0]
    step = dose_scaling(folder / "rtdose.dcm")  # 16-bit dose: within half its step
    assert np.allclose(resample(back.dose, case.ct).array, case.dose.array, atol=step / 2 + 1e-5)


def test_partial_volume_measures_a_small_sphere_in_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from DoseSegLib.io.dicom import partial

    radius, step = 4.0, 2.5
    planes = np.arange(-3.75, 3.76, step)
    contours = [_circle((0, 0), np.sqrt(radius**2 - z**2), z) for z in planes if abs(z) < radius]
    slab_volume = _slab_volume(radius, planes, step)
    ct = _grid((16, 16, 6), (2.0, 2.0, step), (-15.0, -15.0, -6.25))
    fractions = partial.partial_volume(contours, ct, factor=8)
    assert fractions.min() >= 0 and fractions.max() <= 1 and fractions.dtype == np.float32
    assert fractions.sum() * np.prod(ct.spacing) == pytest.approx(slab_volume, rel=0.02)
    assert np.array_equal(fractions > 0, rasterise(contours, _grid((128, 128, 48), (0.25, 0.25, 0.3125),
                          (-15.875, -15.875, -7.34375)), 2.5).reshape(16, 8, 16, 8, 6, 8).any(axis=(1, 3, 5)))
    monkeypatch.setattr(partial, "MAX_FINE_VOXELS", 1)  # one CT slice at a time: the same fractions
    assert np.array_equal(partial.partial_volume(contours, ct, factor=8), fractions)
