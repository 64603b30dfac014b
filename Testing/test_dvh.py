"""DVHs and DVH metrics: analytic cases, numpy equivalence, bad input, and real patients."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.analysis.dosecheck import check_dose_coverage, check_dose_units, dose_coverage
from DoseSegLib.analysis.dvh import (
    METRIC_COLUMNS,
    compute_dvhs,
    cumulative_dvh,
    dose_at_volume_pct,
    dvh_metrics,
    metrics_rows,
    metrics_table,
    percentile_sorted,
    volume_pct_at_dose,
    write_dvh_csv,
    write_metrics_csv,
)
from DoseSegLib.analysis.openkbp import dose_at_volume_cc
from DoseSegLib.analysis.sampling import StructureDoses, gather_doses
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.tables import read_csv

SPACING = (2.0, 2.0, 2.5)  # 0.01 cc voxels
VOXEL_CC = 0.01
GRADIENT = 0.5  # Gy per voxel along i


def gradient_grid(shape: tuple[int, int, int] = (60, 20, 20)) -> Volume:
    """Dose rising by GRADIENT Gy per voxel along i (dose[i] = GRADIENT * i)."""
    dose = np.broadcast_to(GRADIENT * np.arange(shape[0], dtype=np.float32)[:, None, None], shape).copy()
    return Volume(dose, SPACING, (-10.0, 5.0, 0.0))


def box(grid: Volume, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> Volume:
    mask = np.zeros(grid.shape, dtype=bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return grid.with_array(mask)


def samples(doses: np.ndarray, sample_cc: float = VOXEL_CC) -> StructureDoses:
    """Doses as the samples of one structure, each ``sample_cc``."""
    ordered = np.sort(np.asarray(doses, dtype=np.float64), axis=None)
    return StructureDoses(ordered, sample_cc, ordered, "test samples")


def test_percentile_sorted_is_numpy_percentile() -> None:
    rng = np.random.default_rng(0)
    q = [0, 0.37, 1, 2, 5, 50, 95, 98, 99, 99.9, 100]
    for size in (1, 2, 7, 1000):
        values = rng.gamma(2.0, 10.0, size)
        expected = [np.percentile(values, p) for p in q]
        assert percentile_sorted(np.sort(values), q).tolist() == expected


def test_line_box_metrics_in_closed_form() -> None:
    """A one-voxel-thick box along the gradient: N distinct doses d0 + g*t, so every Dx is linear in x."""
    grid = gradient_grid()
    lo, n = 10, 40
    metrics = dvh_metrics(samples(grid.array[lo:lo + n, 3, 4]), v_gy=(12.0, 20.0))
    d0, top = GRADIENT * lo, GRADIENT * (lo + n - 1)
    assert metrics["Volume[cc]"] == pytest.approx(n * VOXEL_CC)
    assert (metrics["Min[Gy]"], metrics["Max[Gy]"]) == (d0, top)
    assert metrics["Mean[Gy]"] == pytest.approx((d0 + top) / 2)
    for x in (99, 98, 95, 50, 2, 1):
        assert metrics[f"D{x}%[Gy]"] == pytest.approx(d0 + GRADIENT * (n - 1) * (100 - x) / 100), x
    for volume_cc, key in ((0.1, "D0.1cc[Gy]"), (0.03, "D0.03cc[Gy]")):  # 25 % and 7.5 % of the 0.4 cc
        assert metrics[key] == pytest.approx(d0 + GRADIENT * (n - 1) * (1 - volume_cc / 0.4)), key
    assert "D2cc[Gy]" not in metrics and "D2cc[Gy] not computed: the structure holds 0.4 cc" in metrics["note"]
    # V12Gy: 12 Gy is sample t = 14 (5 + 0.5 t); on the cumulative DVH it sits at 1 - 14/39.
    assert metrics["V12Gy[%]"] == pytest.approx(100 * (1 - 14 / 39))
    assert metrics["V12Gy[cc]"] == pytest.approx(0.4 * (1 - 14 / 39))
    assert metrics["V20Gy[%]"] == pytest.approx(100 * (1 - 30 / 39))


def test_box_in_gradient_dvh_and_metrics() -> None:
    """A 20x10x8 box: 20 slabs of 80 voxels at doses 5, 5.5, ... 14.5 Gy."""
    grid = gradient_grid()
    mask = box(grid, (10, 5, 6), (30, 15, 14))
    slabs = GRADIENT * np.arange(10, 30)
    (row,) = metrics_table(grid, {"Box": mask}, v_gy=[10.0])
    assert row["structure"] == "Box"
    assert row["Volume[cc]"] == pytest.approx(1600 * VOXEL_CC)
    assert row["Mean[Gy]"] == pytest.approx(slabs.mean())
    assert (row["Min[Gy]"], row["Max[Gy]"]) == (5.0, 14.5)
    assert row["D50%[Gy]"] == pytest.approx((slabs[9] + slabs[10]) / 2)  # between the two middle slabs
    assert row["D0.1cc[Gy]"] == row["D0.03cc[Gy]"] == 14.5  # the hottest slab holds 0.8 cc
    assert row["V10Gy[%]"] == pytest.approx(100 * (1 - 800 / 1599))  # the first 10 Gy voxel is sample 800
    assert "HI" not in row  # not a target

    dvh = compute_dvhs(grid, {"Box": mask}, step_gy=0.5)["Box"]
    np.testing.assert_allclose(dvh.dose_gy, 0.5 * np.arange(31))  # 0 .. 15 Gy: ends above the 14.5 Gy maximum
    # Every bin edge up to 14.5 Gy is a slab dose: the curve sits at its first voxel, 1 - index / 1599.
    expected_pct = [100.0 * (1 - 80 * np.count_nonzero(slabs < d) / 1599) if d <= 14.5 else 0.0 for d in dvh.dose_gy]
    np.testing.assert_allclose(dvh.volume_pct, expected_pct)
    np.testing.assert_allclose(dvh.volume_cc, np.asarray(expected_pct) / 100 * 16.0)
    assert dvh.volume_pct[-1] == 0 and dvh.volume_pct[0] == 100


@pytest.mark.parametrize("step", [0.1, 0.25, 1.0, 3.0])
def test_dvh_step_is_configurable(step: float) -> None:
    rng = np.random.default_rng(1)
    doses = rng.uniform(0, 70, 5000)
    dvh = cumulative_dvh(samples(doses), step)
    np.testing.assert_allclose(np.diff(dvh.dose_gy), step)
    assert dvh.dose_gy[-2] <= doses.max() < dvh.dose_gy[-1]
    assert np.all(np.diff(dvh.volume_pct) <= 0)
    # Interpolated between samples: within one sample of the voxel count.
    np.testing.assert_allclose(dvh.volume_pct, [100 * np.mean(doses >= d) for d in dvh.dose_gy], atol=100 / 4999)


def test_target_homogeneity_and_paddick_conformity() -> None:
    """Target 10x10x10 at 60-64.5 Gy; the 60 Gy isodose is a 14x10x10 slab region inside the body."""
    shape = (40, 20, 20)
    dose = np.zeros(shape, dtype=np.float32)
    dose[10:20, 5:15, 5:15] = (60 + GRADIENT * np.arange(10))[:, None, None]
    dose[20:24, 5:15, 5:15] = 61.0  # spill outside the target
    dose[24:30, 5:15, 5:15] = 59.0  # below prescription
    grid = Volume(dose, SPACING, (0.0, 0.0, 0.0))
    target = box(grid, (10, 5, 5), (20, 15, 15))
    body = box(grid, (0, 0, 0), (40, 20, 20))
    (row,) = metrics_table(grid, {"PTV60": target}, {"PTV60": 60.0}, body)
    assert row["prescription_gy"] == 60.0
    assert row["HI"] == pytest.approx((row["D2%[Gy]"] - row["D98%[Gy]"]) / row["D50%[Gy]"])
    assert row["CI"] == pytest.approx(1000**2 / (1000 * 1400))
    # Half the target under-dosed: TV_PIV = 500.
    underdosed = grid.with_array(np.where(target.array & (np.arange(40)[:, None, None] < 15), 50.0, dose))
    (row,) = metrics_table(underdosed, {"PTV60": target}, {"PTV60": 60.0}, body)
    # TV_PIV on the cumulative DVH: 60 Gy lies between the last 50 Gy sample (499) and 62.5 Gy (500).
    covered = 1000 * (1 - (499 + 10 / 12.5) / 999)
    assert row["CI"] == pytest.approx(covered**2 / (1000 * 900))


def test_paddick_ci_of_nested_and_separate_targets() -> None:
    """PTV70 inside PTV56 (nested) and a separate PTV63: the high-dose targets are not PTV56's spill."""
    shape = (60, 20, 20)
    dose = np.zeros(shape, dtype=np.float32)
    grid = Volume(dose, SPACING, (0.0, 0.0, 0.0))
    ptv56, ptv70, ptv63 = box(grid, (5, 5, 5), (25, 15, 15)), box(grid, (10, 7, 7), (16, 13, 12)), \
        box(grid, (35, 5, 5), (45, 15, 15))
    dose[ptv56.array] = 57.0
    dose[ptv70.array] = 71.0
    dose[ptv63.array] = 64.0
    dose[25:28, 5:15, 5:15] = 58.0  # 300 voxels of real spill at 56 Gy
    grid = grid.with_array(dose)
    masks = {"PTV70": ptv70, "PTV63": ptv63, "PTV56": ptv56}
    rows = {r["structure"]: r for r in metrics_table(grid, masks, {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0})}
    assert rows["PTV56"]["CI"] == pytest.approx(2000**2 / (2000 * 2300))  # PTV63 (64 Gy) is not spill
    assert rows["PTV70"]["CI"] == pytest.approx(1.0) and rows["PTV63"]["CI"] == pytest.approx(1.0)
    # Without the masks every voxel at 56 Gy or more counts, PTV63 included.
    gathered = gather_doses(grid, masks)
    plain = {r["structure"]: r for r in metrics_rows(gathered, grid, {"PTV56": 56.0})}
    assert plain["PTV56"]["CI"] == pytest.approx(2000**2 / (2000 * 3300))


def test_scalar_helpers_agree_with_numpy() -> None:
    rng = np.random.default_rng(2)
    doses = rng.uniform(0, 70, 333).astype(np.float32)
    assert dose_at_volume_pct(doses, 95) == np.percentile(doses.astype(np.float64), 5)
    n = round(0.1 / 0.004)
    assert dose_at_volume_cc(doses, 0.1, 0.004) == np.percentile(doses.astype(np.float64), 100 - n / 333 * 100)
    # A structure smaller than the volume gives its minimum instead of failing.
    assert dose_at_volume_cc(doses[:3], 0.1, 0.004) == doses[:3].min()
    ordered = np.sort(doses.astype(np.float64))
    assert volume_pct_at_dose(ordered, [0.0, ordered[0], ordered[-1], 71.0]).tolist() == [100, 100, 0, 0]
    for i in (1, 100, 331):  # a sample's own dose sits at its place on the curve, and back
        assert volume_pct_at_dose(ordered, ordered[i]) == pytest.approx(100 * (1 - i / 332))
        assert dose_at_volume_pct(ordered, 100 * (1 - i / 332), presorted=True) == pytest.approx(ordered[i])


def test_csv_writers(tmp_path: Path) -> None:
    grid = gradient_grid()
    structures = {"Box": box(grid, (10, 5, 6), (30, 15, 14)), "PTV14": box(grid, (20, 0, 0), (30, 4, 4))}
    write_dvh_csv(tmp_path / "dvh.csv", compute_dvhs(grid, structures))
    write_metrics_csv(tmp_path / "dvh_metrics.csv", metrics_table(grid, structures, {"PTV14": 14.0}, v_gy=[10]))
    dvh = read_csv(tmp_path / "dvh.csv", ["structure", "dose_gy", "volume_cc", "volume_pct"])
    assert {r["structure"] for r in dvh} == {"Box", "PTV14"}
    metrics = read_csv(tmp_path / "dvh_metrics.csv")
    header = list(metrics[0])
    assert header[: len(METRIC_COLUMNS)] == list(METRIC_COLUMNS)
    assert header[-5:] == ["prescription_gy", "HI", "CI", "dvh_method", "note"]
    assert [r["HI"] == "" for r in metrics] == [True, False]
    assert float(metrics[0]["D50%[Gy]"]) == pytest.approx(9.75)


def test_empty_or_misaligned_structure_is_named() -> None:
    grid = gradient_grid()
    empty = grid.with_array(np.zeros(grid.shape, dtype=bool))
    with pytest.raises(DoseSegError, match="'Larynx' is empty"):
        metrics_table(grid, {"Larynx": empty})
    shifted = Volume(box(grid, (0, 0, 0), (2, 2, 2)).array, SPACING, (0.0, 0.0, 0.0))
    with pytest.raises(DoseSegError, match="'Cord' is not on the dose grid"):
        compute_dvhs(grid, {"Cord": shifted})


def test_dose_in_cgy_is_refused() -> None:
    dose = gradient_grid()
    cgy = dose.with_array(dose.array * 100)
    with pytest.raises(DoseSegError, match="cGy"):
        check_dose_units(cgy, "plan.nrrd")
    check_dose_units(cgy, "plan.nrrd", allow_high_dose=True)
    check_dose_units(dose)


def test_structure_outside_the_dose_grid(caplog: pytest.LogCaptureFixture) -> None:
    ct = Volume(np.zeros((40, 20, 20), dtype=np.int16), SPACING, (0.0, 0.0, 0.0))
    # The dose covers i in [0, 20) of the CT only.
    dose = Volume(np.ones((20, 20, 20), dtype=np.float32), SPACING, (0.0, 0.0, 0.0))
    structures = {
        "Inside": box(ct, (2, 2, 2), (10, 10, 10)),
        "Half": box(ct, (15, 2, 2), (25, 10, 10)),
        "Outside": box(ct, (30, 2, 2), (35, 10, 10)),
    }
    assert dose_coverage(dose, structures) == {"Inside": 1.0, "Half": 0.5, "Outside": 0.0}
    with caplog.at_level(logging.WARNING):
        check_dose_coverage(dose, structures)
    assert "'Half': 50.0%" in caplog.text and "'Outside': 100.0%" in caplog.text and "Inside" not in caplog.text
    with pytest.raises(DoseSegError, match="covers none of the structures"):
        check_dose_coverage(dose, {"Outside": structures["Outside"]})


@pytest.mark.parametrize("patient", ["pt_201", "pt_204", "pt_210"])
def test_real_patient_matches_plain_numpy(shared_data: Path, patient: str) -> None:
    folder = shared_data / "openkbp" / "validation" / patient
    case = align_case(read_patient(folder))
    dose = case.dose.array.astype(np.float64)
    voxel_cc = np.prod(case.ct.spacing) / 1000
    rows = metrics_table(case.dose, case.structures, case.targets, case.possible_dose_mask, [30.0], method="voxel")
    dvhs = compute_dvhs(case.dose, case.structures, step_gy=0.1, method="voxel")
    for row in rows:
        name = row["structure"]
        doses = dose[case.structures[name].array]
        assert row["Volume[cc]"] == pytest.approx(doses.size * voxel_cc)
        assert row["Mean[Gy]"] == pytest.approx(doses.mean(), rel=1e-12)
        assert (row["Min[Gy]"], row["Max[Gy]"]) == (doses.min(), doses.max())
        for x in (99, 98, 95, 50, 2, 1):
            assert row[f"D{x}%[Gy]"] == pytest.approx(np.percentile(doses, 100 - x), abs=1e-9)
        for v in (0.1, 0.03):
            hottest = v / (doses.size * voxel_cc)
            assert row[f"D{v:g}cc[Gy]"] == pytest.approx(np.percentile(doses, 100 - 100 * hottest), abs=1e-9)
        assert row["V30Gy[%]"] == pytest.approx(100 * np.mean(doses >= 30), abs=100 / (doses.size - 1))
        edges = np.arange(len(dvhs[name].dose_gy)) * 0.1
        np.testing.assert_allclose(dvhs[name].volume_cc, [(doses >= e).sum() * voxel_cc for e in edges],
                                   atol=voxel_cc * (1 + 1e-9))
        rx = case.targets.get(name)
        if rx is not None:  # spill counted outside the other targets of this level or higher
            others = [m.array for t, m in case.structures.items() if t != name and case.targets.get(t, 0) >= rx]
            elsewhere = np.any(others, axis=0) & ~case.structures[name].array if others else False
            piv = np.count_nonzero((dose >= rx) & case.possible_dose_mask.array & ~elsewhere)
            covered = (doses >= rx).sum()
            assert row["CI"] == pytest.approx(covered**2 / (doses.size * piv), abs=2 / piv)
