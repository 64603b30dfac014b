"""Dose-volume histograms and DVH metrics computed from the voxel doses themselves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENT_METRICS = (99, 98, 95, 50, 2, 1)
SMALL_VOLUMES_CC = (0.1, 0.03)


def dose_at_volume_pct(doses: np.ndarray, percent: float) -> float:
    """Dx: the dose received by at least ``percent`` % of the volume (linear interpolation)."""
    return float(np.percentile(doses, 100 - percent))


def dose_at_volume_cc(doses: np.ndarray, volume_cc: float, voxel_cc: float) -> float:
    """D_V (OpenKBP definition): the dose to the hottest ``volume_cc``, at least one voxel."""
    n = max(1, round(volume_cc / voxel_cc))
    return float(np.percentile(doses, 100 - n / len(doses) * 100))


def dvh_metrics(doses: np.ndarray, voxel_cc: float) -> dict[str, float]:
    """volume_cc, Dmean, Dmin, Dmax, D99 ... D1, D0.1cc, D0.03cc of one structure's voxel doses (Gy)."""
    if doses.size == 0:
        raise ValueError("structure has no voxel")
    metrics = {
        "volume_cc": doses.size * voxel_cc,
        "Dmean": float(doses.mean()),
        "Dmin": float(doses.min()),
        "Dmax": float(doses.max()),
    }
    for percent in PERCENT_METRICS:
        metrics[f"D{percent}"] = dose_at_volume_pct(doses, percent)
    for volume in SMALL_VOLUMES_CC:
        metrics[f"D{volume:g}cc"] = dose_at_volume_cc(doses, volume, voxel_cc)
    return metrics


@dataclass
class DVH:
    """A cumulative DVH: volume receiving at least each dose bin edge."""

    dose_gy: np.ndarray
    volume_cc: np.ndarray
    volume_pct: np.ndarray


def cumulative_dvh(doses: np.ndarray, voxel_cc: float, step_gy: float = 0.1, max_gy: float | None = None) -> DVH:
    """Cumulative DVH of one structure from 0 Gy to past its maximum, in steps of ``step_gy``."""
    if step_gy <= 0:
        raise ValueError("DVH dose step must be positive")
    top = float(doses.max()) if max_gy is None else max_gy
    edges = np.arange(0.0, top + step_gy, step_gy)
    sorted_doses = np.sort(doses)
    counts = sorted_doses.size - np.searchsorted(sorted_doses, edges, side="left")
    return DVH(edges, counts * voxel_cc, 100.0 * counts / sorted_doses.size)
