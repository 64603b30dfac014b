"""Dose-volume histograms and DVH metrics computed from the voxel doses themselves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.tables import Row, columns_of, write_csv

PERCENT_METRICS = (99, 98, 95, 50, 2, 1)
SMALL_VOLUMES_CC = (0.1, 0.03)
METRIC_COLUMNS = (
    "structure", "volume_cc", "Dmean", "Dmin", "Dmax",
    *(f"D{p}" for p in PERCENT_METRICS), *(f"D{v:g}cc" for v in SMALL_VOLUMES_CC),
)
TARGET_COLUMNS = ("prescription_gy", "HI", "CI")
DVH_COLUMNS = ("structure", "dose_gy", "volume_cc", "volume_pct")


def percentile_sorted(sorted_doses: np.ndarray, q: float | Sequence[float]) -> np.ndarray:
    """``np.percentile(doses, q)`` (linear method, same rounding) of already sorted doses.

    Args:
        sorted_doses: 1D ascending array.
        q: percentile(s) in [0, 100].
    """
    quantiles = np.asarray(q, dtype=np.float64) / 100
    n = sorted_doses.size
    virtual = (n - 1) * quantiles
    below = np.floor(virtual)
    gamma = virtual - below
    lower = np.clip(below.astype(np.intp), 0, n - 1)
    a = sorted_doses[lower]
    b = sorted_doses[np.minimum(lower + 1, n - 1)]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


def _sorted(doses: np.ndarray, presorted: bool) -> np.ndarray:
    if doses.size == 0:
        raise ValueError("structure has no voxel")
    return doses if presorted else np.sort(doses.astype(np.float64, copy=False), axis=None)


def dose_at_volume_pct(doses: np.ndarray, percent: float, presorted: bool = False) -> float:
    """Dx: the dose received by at least ``percent`` % of the volume (linear interpolation).

    Args:
        doses: the structure's voxel doses (Gy).
        percent: x in Dx.
        presorted: ``doses`` is already sorted ascending.
    """
    return float(percentile_sorted(_sorted(doses, presorted), 100 - percent))


def dose_at_volume_cc(doses: np.ndarray, volume_cc: float, voxel_cc: float, presorted: bool = False) -> float:
    """D_V (OpenKBP definition): the dose to the hottest ``volume_cc``, at least one voxel.

    ``np.percentile(doses, 100 - n / len(doses) * 100)`` with ``n = max(1, round(volume_cc / voxel_cc))``;
    a structure smaller than ``volume_cc`` gives its minimum dose.

    Args:
        doses: the structure's voxel doses (Gy).
        volume_cc: V in cm^3.
        voxel_cc: volume of one voxel in cm^3.
        presorted: ``doses`` is already sorted ascending.
    """
    doses = _sorted(doses, presorted)
    return float(percentile_sorted(doses, _hottest_percentile(volume_cc, voxel_cc, doses.size)))


def _hottest_percentile(volume_cc: float, voxel_cc: float, count: int) -> float:
    """The percentile of D_V: 100 - n / count * 100, n = max(1, round(V / voxel volume)) capped at count."""
    n = min(max(1, round(volume_cc / voxel_cc)), count)
    return 100 - n / count * 100


def volume_at_dose(sorted_doses: np.ndarray, dose_gy: float | np.ndarray) -> np.ndarray:
    """Number of voxels receiving at least ``dose_gy`` (sorted ascending doses)."""
    return sorted_doses.size - np.searchsorted(sorted_doses, dose_gy, side="left")


def v_columns(dose_gy: float) -> tuple[str, str]:
    """Names of the V_x metrics (percent of the volume, cm^3) for ``dose_gy``."""
    return f"V{dose_gy:g}Gy_pct", f"V{dose_gy:g}Gy_cc"


def dvh_metrics(
    doses: np.ndarray, voxel_cc: float, v_gy: Sequence[float] = (), presorted: bool = False
) -> dict[str, float]:
    """volume_cc, Dmean, Dmin, Dmax, D99 ... D1, D0.1cc, D0.03cc and V_x of one structure's doses.

    Args:
        doses: the structure's voxel doses (Gy).
        voxel_cc: volume of one voxel in cm^3.
        v_gy: doses x (Gy) for which to report V_x in % and cm^3.
        presorted: ``doses`` is already sorted ascending.
    """
    doses = _sorted(doses, presorted)
    metrics = {
        "volume_cc": doses.size * voxel_cc,
        "Dmean": float(doses.mean()),
        "Dmin": float(doses[0]),
        "Dmax": float(doses[-1]),
    }
    percents = [100 - p for p in PERCENT_METRICS]
    percents += [_hottest_percentile(v, voxel_cc, doses.size) for v in SMALL_VOLUMES_CC]
    names = [f"D{p}" for p in PERCENT_METRICS] + [f"D{v:g}cc" for v in SMALL_VOLUMES_CC]
    metrics.update(zip(names, percentile_sorted(doses, percents).tolist()))
    counts = volume_at_dose(doses, np.asarray(v_gy, dtype=np.float64))
    for dose_gy, count in zip(v_gy, counts.tolist()):
        pct, cc = v_columns(dose_gy)
        metrics[pct] = 100.0 * count / doses.size
        metrics[cc] = count * voxel_cc
    return metrics


@dataclass
class DVH:
    """A cumulative DVH: volume receiving at least each dose bin edge."""

    dose_gy: np.ndarray
    volume_cc: np.ndarray
    volume_pct: np.ndarray


def cumulative_dvh(
    doses: np.ndarray, voxel_cc: float, step_gy: float = 0.1, max_gy: float | None = None, presorted: bool = False
) -> DVH:
    """Cumulative DVH from 0 Gy in steps of ``step_gy``, ending at the first bin above the maximum (0 volume).

    Args:
        doses: the structure's voxel doses (Gy).
        voxel_cc: volume of one voxel in cm^3.
        step_gy: dose bin width.
        max_gy: last dose of the curve (default: the structure's maximum dose).
        presorted: ``doses`` is already sorted ascending.
    """
    if step_gy <= 0:
        raise ValueError("DVH dose step must be positive")
    doses = _sorted(doses, presorted)
    top = float(doses[-1]) if max_gy is None else max_gy
    edges = step_gy * np.arange(int(np.floor(top / step_gy)) + 2)
    counts = volume_at_dose(doses, edges)
    return DVH(edges, counts * voxel_cc, 100.0 * counts / doses.size)


def structure_doses(dose: Volume, structures: Mapping[str, Volume]) -> dict[str, np.ndarray]:
    """Each structure's voxel doses (Gy, float64), sorted ascending.

    Args:
        dose: dose on the structures' grid.
        structures: boolean masks by name, on the dose grid.
    """
    doses = {}
    for name, mask in structures.items():
        if not mask.same_grid(dose):
            raise DoseSegError(f"structure '{name}' is not on the dose grid: align the case first")
        values = dose.array[mask.array.astype(bool, copy=False)]
        if values.size == 0:
            raise DoseSegError(f"structure '{name}' is empty (no voxel set)")
        doses[name] = np.sort(values.astype(np.float64))
    return doses


def compute_dvhs(dose: Volume, structures: Mapping[str, Volume], step_gy: float = 0.1) -> dict[str, DVH]:
    """Cumulative DVH (cm^3 and %) of every structure, each up to just above its own maximum.

    Args:
        dose: dose (Gy) on the structures' grid.
        structures: boolean masks by name.
        step_gy: dose bin width.
    """
    if step_gy <= 0:
        raise DoseSegError(f"DVH dose step must be positive (got {step_gy})")
    voxel_cc = dose.voxel_volume_cc
    return {
        name: cumulative_dvh(values, voxel_cc, step_gy, presorted=True)
        for name, values in structure_doses(dose, structures).items()
    }


def homogeneity_index(metrics: Mapping[str, float]) -> float:
    """ICRU 83 homogeneity index (D2 - D98) / D50; NaN when D50 is 0."""
    d50 = metrics["D50"]
    return (metrics["D2"] - metrics["D98"]) / d50 if d50 > 0 else float("nan")


def paddick_ci(target_count: int, target_covered: int, isodose_count: int) -> float:
    """Paddick conformity index TV_PIV^2 / (TV * PIV) from voxel counts.

    Args:
        target_count: TV, voxels of the target.
        target_covered: TV_PIV, target voxels receiving at least the prescription.
        isodose_count: PIV, body voxels receiving at least the prescription.
    """
    if isodose_count == 0:
        return 0.0
    return target_covered**2 / (target_count * isodose_count)


def metrics_table(
    dose: Volume,
    structures: Mapping[str, Volume],
    prescriptions: Mapping[str, float] | None = None,
    body: Volume | None = None,
    v_gy: Sequence[float] = (),
) -> list[Row]:
    """One row of DVH metrics per structure (doses in Gy), with HI and Paddick CI for targets.

    Args:
        dose: dose (Gy) on the structures' grid.
        structures: boolean masks by name.
        prescriptions: prescription (Gy) of each target structure; other structures are OARs.
        body: where the prescription isodose volume is counted (body or possible-dose mask);
            the whole grid when None.
        v_gy: doses x for which to report V_x (``VxGy_pct``, ``VxGy_cc``).
    """
    prescriptions = prescriptions or {}
    voxel_cc = dose.voxel_volume_cc
    body_doses = dose.array[body.array.astype(bool, copy=False)] if body is not None else dose.array
    rows = []
    for name, values in structure_doses(dose, structures).items():
        row: Row = {"structure": name, **dvh_metrics(values, voxel_cc, v_gy, presorted=True)}
        rx = prescriptions.get(name)
        if rx is not None:
            covered = int(volume_at_dose(values, rx))
            isodose = int(np.count_nonzero(body_doses >= rx))
            row.update(prescription_gy=rx, HI=homogeneity_index(row), CI=paddick_ci(values.size, covered, isodose))
        rows.append(row)
    return rows


def dvh_rows(dvhs: Mapping[str, DVH]) -> list[Row]:
    """The DVHs as long-format rows: structure, dose_gy, volume_cc, volume_pct."""
    return [
        {"structure": name, "dose_gy": d, "volume_cc": cc, "volume_pct": pct}
        for name, dvh in dvhs.items()
        for d, cc, pct in zip(dvh.dose_gy.tolist(), dvh.volume_cc.tolist(), dvh.volume_pct.tolist())
    ]


def write_dvh_csv(path: str | Path, dvhs: Mapping[str, DVH]) -> None:
    """Write DVHs as ``dvh.csv`` (columns structure, dose_gy, volume_cc, volume_pct)."""
    write_csv(path, dvh_rows(dvhs), DVH_COLUMNS)


def write_metrics_csv(path: str | Path, rows: Sequence[Row]) -> None:
    """Write a metrics table as ``dvh_metrics.csv`` (metric columns first, then V_x, then target columns)."""
    columns = columns_of(rows, METRIC_COLUMNS)
    columns = [c for c in columns if c not in TARGET_COLUMNS] + list(TARGET_COLUMNS)
    write_csv(path, rows, columns)
