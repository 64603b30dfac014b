"""Dose-volume histograms and DVH metrics of each structure's dose samples (see ``analysis.sampling``).

Every metric reads one piecewise-linear cumulative DVH: sample i of n (ascending dose) sits at
the volume fraction 1 - i / (n - 1) receiving at least its dose, the ``np.percentile`` linear
convention. Dx% and Dx cc are interpolated doses on it, Vx interpolated volumes, so no metric is
rounded to whole voxels; a volume larger than the structure gives an empty cell and a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DoseSegLib.analysis import metric_names as mn
from DoseSegLib.analysis.sampling import StructureDoses, gather_doses
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import DvhMethod
from DoseSegLib.core.volume import Volume, mask_box
from DoseSegLib.io.tables import Row, columns_of, write_csv

__all__ = ["DVH", "DVH_COLUMNS", "METRIC_COLUMNS", "NOTE_COLUMNS", "PERCENT_METRICS", "SMALL_VOLUMES_CC",
    "TARGET_COLUMNS", "compute_dvhs", "cumulative_dvh", "dose_at_volume_pct", "dvh_metrics", "dvh_rows", "dvhs_of",
    "homogeneity_index", "isodose_volume_cc", "metrics_columns", "metrics_rows", "metrics_table", "paddick_ci",
    "percentile_sorted", "volume_pct_at_dose", "write_dvh_csv", "write_metrics_csv"
]

PERCENT_METRICS = (99, 98, 95, 50, 2, 1)
SMALL_VOLUMES_CC = (2.0, 0.1, 0.03)
METRIC_COLUMNS = (
    "structure", "original_name", mn.VOLUME, mn.MEAN, mn.MIN, mn.MAX,
    *(mn.dose_at_pct(p) for p in PERCENT_METRICS), *(mn.dose_at_cc(v) for v in SMALL_VOLUMES_CC),
)
TARGET_COLUMNS = ("prescription_gy", "HI", "CI")
NOTE_COLUMNS = ("dvh_method", "note")
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


def dose_at_volume_pct(doses: np.ndarray, percent: float, presorted: bool = False) -> float:
    """Dx%: the dose received by at least ``percent`` % of the volume (linear interpolation).

    Args:
        doses: the structure's voxel doses (Gy).
        percent: x in Dx.
        presorted: ``doses`` is already sorted ascending.
    """
    if doses.size == 0:
        raise ValueError("structure has no voxel")
    doses = doses if presorted else np.sort(doses.astype(np.float64, copy=False), axis=None)
    return float(percentile_sorted(doses, 100 - percent))


def volume_pct_at_dose(sorted_doses: np.ndarray, dose_gy: float | np.ndarray) -> np.ndarray:
    """Vx in % of the structure: the cumulative DVH at ``dose_gy``, interpolated between samples.

    The inverse of ``percentile_sorted``: 100 % at or below the minimum dose, 0 % above the maximum.
    """
    dose_gy = np.asarray(dose_gy, dtype=np.float64)
    n = sorted_doses.size
    if n == 1:
        return np.where(dose_gy <= sorted_doses[0], 100.0, 0.0)
    upper = np.clip(np.searchsorted(sorted_doses, dose_gy, side="left"), 1, n - 1)
    low, high = sorted_doses[upper - 1], sorted_doses[upper]
    step = np.where(high > low, high - low, 1.0)
    position = upper - 1 + np.clip((dose_gy - low) / step, 0.0, 1.0)
    pct = 100.0 * (1.0 - position / (n - 1))
    return np.where(dose_gy <= sorted_doses[0], 100.0, np.where(dose_gy > sorted_doses[-1], 0.0, pct))


def dvh_metrics(samples: StructureDoses, v_gy: Sequence[float] = ()) -> Row:
    """Volume, mean, min, max, D99% ... D1%, D2cc, D0.1cc, D0.03cc and V_x of one structure.

    A Dx cc larger than the structure is left out (empty cell) and named in ``note``; one
    smaller than a single sample is computed and named there too.

    Args:
        samples: the structure's dose samples (``gather_doses``).
        v_gy: doses x (Gy) for which to report V_x in % and cm^3.
    """
    doses, total = samples.doses, samples.volume_cc
    row: Row = {mn.VOLUME: total, mn.MEAN: float(doses.mean()), mn.MIN: float(doses[0]), mn.MAX: float(doses[-1])}
    row.update(zip(
        (mn.dose_at_pct(p) for p in PERCENT_METRICS),
        percentile_sorted(doses, [100 - p for p in PERCENT_METRICS]).tolist(), strict=True,
    ))
    notes = []
    for volume in SMALL_VOLUMES_CC:
        name = mn.dose_at_cc(volume)
        if volume > total:
            notes.append(f"{name} not computed: the structure holds {total:.3g} cc")
            continue
        if volume < samples.sample_cc:
            notes.append(f"{name} is below the resolution ({samples.sample_cc:.3g} cc per sample)")
        row[name] = float(percentile_sorted(doses, 100 - 100 * volume / total))
    pcts = volume_pct_at_dose(doses, np.asarray(v_gy, dtype=np.float64))
    for dose_gy, pct in zip(v_gy, pcts.tolist(), strict=True):
        pct_name, cc_name = mn.volume_at_dose(dose_gy)
        row[pct_name], row[cc_name] = pct, pct / 100 * total
    row["dvh_method"] = samples.method
    if notes:
        row["note"] = "; ".join(notes)
    return row


@dataclass
class DVH:
    """A cumulative DVH: volume receiving at least each dose bin edge."""

    dose_gy: np.ndarray
    volume_cc: np.ndarray
    volume_pct: np.ndarray


def cumulative_dvh(samples: StructureDoses, step_gy: float = 0.1, max_gy: float | None = None) -> DVH:
    """Cumulative DVH from 0 Gy in steps of ``step_gy``, ending at the first bin above the maximum (0 volume).

    Args:
        samples: the structure's dose samples.
        step_gy: dose bin width.
        max_gy: last dose of the curve (default: the structure's maximum dose).
    """
    if step_gy <= 0:
        raise DoseSegError(f"DVH dose step must be positive (got {step_gy})")
    top = float(samples.doses[-1]) if max_gy is None else max_gy
    edges = step_gy * np.arange(int(np.floor(top / step_gy)) + 2)
    pct = volume_pct_at_dose(samples.doses, edges)
    return DVH(edges, pct / 100 * samples.volume_cc, pct)


def dvhs_of(gathered: Mapping[str, StructureDoses], step_gy: float = 0.1) -> dict[str, DVH]:
    """Cumulative DVH (cm^3 and %) of every gathered structure, each up to just above its own maximum."""
    return {name: cumulative_dvh(samples, step_gy) for name, samples in gathered.items()}


def compute_dvhs(
    dose: Volume, structures: Mapping[str, Volume], step_gy: float = 0.1,
    fine_structures: Mapping[str, Volume] | None = None, method: DvhMethod | str = DvhMethod.AUTO,
) -> dict[str, DVH]:
    """Cumulative DVH (cm^3 and %) of every structure (see ``gather_doses`` for the arguments)."""
    if step_gy <= 0:
        raise DoseSegError(f"DVH dose step must be positive (got {step_gy})")
    return dvhs_of(gather_doses(dose, structures, fine_structures, method), step_gy)


def homogeneity_index(metrics: Mapping[str, float]) -> float:
    """ICRU 83 homogeneity index (D2% - D98%) / D50%; NaN when D50% is 0."""
    d50 = metrics[mn.dose_at_pct(50)]
    return (metrics[mn.dose_at_pct(2)] - metrics[mn.dose_at_pct(98)]) / d50 if d50 > 0 else float("nan")


def paddick_ci(target_cc: float, target_covered_cc: float, isodose_cc: float) -> float:
    """Paddick conformity index TV_PIV^2 / (TV * PIV) from volumes (or voxel counts).

    Args:
        target_cc: TV, volume of the target.
        target_covered_cc: TV_PIV, target volume receiving at least the prescription.
        isodose_cc: PIV, body volume receiving at least the prescription.
    """
    if isodose_cc == 0:
        return 0.0
    return target_covered_cc**2 / (target_cc * isodose_cc)


def isodose_volume_cc(
    dose: Volume, rx: float, target: str, prescriptions: Mapping[str, float],
    masks: Mapping[str, Volume], body: Volume | None = None,
) -> float:
    """PIV of ``target``: the body volume receiving at least ``rx``, less what lies in the other
    targets prescribed ``rx`` or more (nested or separate dose levels are not spill)."""
    box = tuple(slice(0, n) for n in dose.shape)
    if body is not None:
        box = mask_box(body.array) if body.array.any() else tuple(slice(0, 0) for _ in dose.shape)
    region = dose.array[box] >= rx  # only the body's box can count
    if body is not None:
        region &= body.array[box].astype(bool, copy=False)
    inside_target = masks[target].array[box].astype(bool, copy=False) if target in masks else np.False_
    for other, other_rx in prescriptions.items():
        if other != target and other_rx >= rx and other in masks:
            region &= ~(masks[other].array[box].astype(bool, copy=False) & ~inside_target)
    return np.count_nonzero(region) * dose.voxel_volume_cc


def metrics_rows(
    gathered: Mapping[str, StructureDoses],
    dose: Volume,
    prescriptions: Mapping[str, float] | None = None,
    body: Volume | None = None,
    v_gy: Sequence[float] = (),
    masks: Mapping[str, Volume] | None = None,
    original_names: Mapping[str, str] | None = None,
) -> list[Row]:
    """One row of DVH metrics per gathered structure, with HI and Paddick CI for targets.

    Args:
        gathered: each structure's dose samples (``gather_doses``).
        dose: the dose (Gy) they were taken from, for the prescription isodose volume.
        prescriptions: prescription (Gy) of each target structure; other structures are OARs.
        body: where the prescription isodose volume is counted (body or possible-dose mask);
            the whole grid when None.
        v_gy: doses x for which to report V_x.
        masks: the structures on the dose grid; with them a target's CI counts only spill
            outside the other targets of its dose level or higher (``isodose_volume_cc``).
        original_names: each structure's name as in its file (``original_name``; empty when unknown,
            e.g. auto-segmented).
    """
    prescriptions = prescriptions or {}
    original_names = original_names or {}
    rows = []
    for name, samples in gathered.items():
        row: Row = {"structure": name, "original_name": original_names.get(name, ""), **dvh_metrics(samples, v_gy)}
        rx = prescriptions.get(name)
        if rx is not None:
            covered = float(volume_pct_at_dose(samples.doses, rx)) / 100 * samples.volume_cc
            isodose = isodose_volume_cc(dose, rx, name, prescriptions, masks or {}, body)
            row.update(prescription_gy=rx, HI=homogeneity_index(row),
                       CI=paddick_ci(samples.volume_cc, covered, isodose))
        rows.append(row)
    return rows


def metrics_table(
    dose: Volume,
    structures: Mapping[str, Volume],
    prescriptions: Mapping[str, float] | None = None,
    body: Volume | None = None,
    v_gy: Sequence[float] = (),
    fine_structures: Mapping[str, Volume] | None = None,
    method: DvhMethod | str = DvhMethod.AUTO,
) -> list[Row]:
    """``metrics_rows`` of the structures' doses gathered here (see ``gather_doses``)."""
    gathered = gather_doses(dose, structures, fine_structures, method)
    return metrics_rows(gathered, dose, prescriptions, body, v_gy, structures)


def dvh_rows(dvhs: Mapping[str, DVH]) -> list[Row]:
    """The DVHs as long-format rows: structure, dose_gy, volume_cc, volume_pct."""
    return [
        {"structure": name, "dose_gy": d, "volume_cc": cc, "volume_pct": pct}
        for name, dvh in dvhs.items()
        for d, cc, pct in zip(dvh.dose_gy.tolist(), dvh.volume_cc.tolist(), dvh.volume_pct.tolist(), strict=True)
    ]


def write_dvh_csv(path: str | Path, dvhs: Mapping[str, DVH]) -> None:
    """Write DVHs as ``dvh.csv`` (columns structure, dose_gy, volume_cc, volume_pct)."""
    write_csv(path, dvh_rows(dvhs), DVH_COLUMNS)


def metrics_columns(rows: Sequence[Row]) -> list[str]:
    """The columns of ``dvh_metrics.csv`` in order: metrics, V_x, target columns, then the method and notes."""
    columns = columns_of(rows, METRIC_COLUMNS)
    tail = (*TARGET_COLUMNS, *NOTE_COLUMNS)
    return [c for c in columns if c not in tail] + list(tail)


def write_metrics_csv(path: str | Path, rows: Sequence[Row]) -> None:
    """Write a metrics table as ``dvh_metrics.csv`` (see :func:`metrics_columns`)."""
    write_csv(path, rows, metrics_columns(rows))
