"""A DICOM copy of slicerrt-eclipse-prostate: Eclipse's slab rasterisation reproduced, DVH against Eclipse's."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import round_contours, write_dicom_from_slab_masks

from DoseSegLib.cli.main import main
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.partial import partial_volume
from DoseSegLib.io.dicom.rasterise import rasterise
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.reader import ct_geometry
from DoseSegLib.io.dicom.results import read_dicom_target, write_dicom_structures
from DoseSegLib.io.dicom.rtstruct import read_rois, roi_mask
from DoseSegLib.io.patient import read_patient

ECLIPSE_NAMES = {"BODY": "BODY", "Bladder": "Bladder", "Femoral_Head_Lt": "FemoralHeadLt",
                 "Femoral_Head_RT": "FemoralHeadRT", "PTV": "PTV", "Rectum": "Rectum"}
PLAN_MAX_GY = 47.1


@pytest.fixture(scope="module")
def prostate(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = shared_data / "slicerrt-eclipse-prostate"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    # BODY declared an ORGAN: DoseSeg reads an EXTERNAL ROI as the possible-dose mask, and Eclipse's DVH has BODY
    folder = write_dicom_from_slab_masks(tmp_path_factory.mktemp("dicom") / "prostate", read_patient(source), 2.5,
                                         body_kind="ORGAN")
    return source, folder


def test_contours_rasterise_back_to_the_eclipse_slab_masks(prostate: tuple[Path, Path]) -> None:
    """The fine masks were made from Eclipse's contours with its convention: ours gives the same voxels, none
    beyond the first and last planes, and the same volumes as partial volume on the CT grid."""
    source, folder = prostate
    case = read_patient(source)
    originals = {case.original_names[name]: mask for name, mask in case.structures.items()}
    ct = read_patient(folder).ct
    for roi in read_rois(pydicom.dcmread(folder / "rtstruct.dcm")):
        mask = originals[roi.name]
        corner = mask.index_to_lps @ np.array([-2.0, -2.0, -4.0, 1.0])  # two voxels and a slab of room around
        padded = Volume(np.pad(mask.array, ((2, 2), (2, 2), (4, 4))), mask.spacing, tuple(corner[:3]), mask.direction)
        assert np.array_equal(rasterise(roi.contours, padded, slab_mm=2.5), padded.array), roi.name
        fractions = partial_volume(roi.contours, ct, factor=4, slab_mm=2.5)  # on the 2.5 mm CT grid
        assert fractions.sum() * ct.voxel_volume_cc == pytest.approx(mask.array.sum() * mask.voxel_volume_cc,
                                                                      rel=0.005), roi.name


def _curves(path: Path, eclipse: bool) -> dict[str, np.ndarray]:
    """Cumulative DVHs (dose Gy, volume %) keyed by our structure names."""
    with path.open() as handle:
        rows = list(csv.reader(handle))
    curves: dict[str, list] = {}
    if eclipse:
        for column in range(0, len(rows[0]) - 1, 2):
            name = rows[0][column].split("_DvhArray")[0]
            ours = next(k for k, v in ECLIPSE_NAMES.items() if v == name)
            curves[ours] = [(float(r[column]), float(r[column + 1])) for r in rows[1:] if len(r) > column + 1
                            and r[column]]
    else:
        header = rows[0]
        for row in rows[1:]:
            record = dict(zip(header, row, strict=True))
            curves.setdefault(record["structure"], []).append((float(record["dose_gy"]), float(record["volume_pct"])))
    return {name: np.array(points) for name, points in curves.items()}


def _metrics(curve: np.ndarray) -> np.ndarray:
    """Dmean, D95% and D2% read off a cumulative DVH."""
    dose, volume = curve[:, 0], curve[:, 1]
    return np.array([np.trapezoid(volume, dose) / 100, np.interp(95, volume[::-1], dose[::-1]),
                     np.interp(2, volume[::-1], dose[::-1])])


def test_dvh_of_the_dicom_copy_agrees_with_eclipse(prostate: tuple[Path, Path], tmp_path: Path) -> None:
    source, folder = prostate
    assert main(["dvh", str(folder), "-o", str(tmp_path / "dvh")]) == 0
    ours = {name.upper(): curve for name, curve in _curves(tmp_path / "dvh" / "dvh.csv", eclipse=False).items()}
    eclipse = {name.upper(): curve for name, curve in _curves(source / "reference" / "dvh_eclipse.csv", True).items()}
    assert set(ours) == set(eclipse)  # BODY is called Body in DoseSeg's canonical names
    errors = np.array([np.abs(_metrics(ours[n]) - _metrics(eclipse[n])) for n in eclipse]) / PLAN_MAX_GY * 100
    # % of the plan maximum; a voxel-count DVH on the NRRD copy gets 0.13 / 0.20 / 0.43, worst 1.40; the goal of
    # issue 27 for contours read at sub-voxel resolution: every mean <= 0.25, worst <= 0.75 (measured 0.24)
    assert errors.mean(axis=0).max() <= 0.25 and errors.max() <= 0.75, errors.round(2)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def _masks(path: Path, grid: Volume) -> dict[str, np.ndarray]:
    return {roi.name: roi_mask(roi, grid, grid.spacing[2], str(path)) for roi in read_rois(pydicom.dcmread(path))}


@pytest.mark.slow
def test_run_export_all_structures_reads_back(shared_data: Path, tmp_path: Path) -> None:
    """The Eclipse plan as DICOM (BODY as EXTERNAL): run -> export-dicom --all-structures -> read back, original
    names kept, Dice >= 0.98 per structure, also with contour z written to 2 decimals; and DoseSeg's own
    contouring of the run's masks (what it writes for structures it drew) read back the same way."""
    source = shared_data / "slicerrt-eclipse-prostate"
    if not source.is_dir():
        pytest.skip(f"{source} not found")
    patient = write_dicom_from_slab_masks(tmp_path / "prostate", read_patient(source), 2.5)
    out, dicom = tmp_path / "run", tmp_path / "dicom"
    assert main(["run", str(patient), "-o", str(out), "--device", "cpu", "--no-radiomics", "--no-segment",
                 "--any-site", "--prescription", "PTV=56"]) == 0
    assert main(["export-dicom", str(out), "--ct", str(patient), "-o", str(dicom), "--all-structures"]) == 0
    grid = ct_geometry(scan_folder(patient)).grid
    originals = _masks(patient / "rtstruct.dcm", grid)
    run_masks = {name: mask.array for name, mask in read_patient(patient).structures.items()}
    target = read_dicom_target(patient)
    write_dicom_structures(tmp_path / "own.dcm", target, {n: grid.with_array(m) for n, m in run_masks.items()})
    for decimals in (None, 2):
        if decimals is not None:
            for name in ("rtstruct.dcm", "own.dcm"):
                path = dicom / name if name == "rtstruct.dcm" else tmp_path / name
                round_contours(shutil.copy(path, tmp_path / f"r{decimals}_{name}"), decimals, xy_decimals=decimals)
        back = _masks(dicom / "rtstruct.dcm" if decimals is None else tmp_path / f"r{decimals}_rtstruct.dcm", grid)
        own = _masks(tmp_path / "own.dcm" if decimals is None else tmp_path / f"r{decimals}_own.dcm", grid)
        assert set(back) == set(originals) == {"BODY", "Bladder", "Femoral_Head_Lt", "Femoral_Head_RT", "PTV",
                                               "Rectum"}
        for name, mask in originals.items():
            assert _dice(back[name], mask) >= 0.98, (decimals, name)
        for name, mask in run_masks.items():
            assert _dice(own[name], mask) >= 0.98, (decimals, name)
            assert np.array_equal(own[name], mask), (decimals, name)
