"""OpenKBP challenge scores: dose score and DVH score (../shared/data/README.md)."""

from __future__ import annotations

import numpy as np

from DoseSegLib.analysis.dvh import dose_at_volume_cc, dose_at_volume_pct
from DoseSegLib.core.case import OARS, target_prescription

TARGET_METRICS = ("D99", "D95", "D1")
OAR_METRICS = ("D0.1cc", "mean")


def dose_error(pred: np.ndarray, ref: np.ndarray, possible_dose_mask: np.ndarray) -> float:
    """Sum of |pred - ref| over the whole grid divided by the possible-dose-mask voxel count (Gy)."""
    return float(np.abs(pred.astype(np.float64) - ref).sum() / np.count_nonzero(possible_dose_mask))


def openkbp_metrics(
    dose: np.ndarray, structures: dict[str, np.ndarray], voxel_cc: float
) -> dict[tuple[str, str], float]:
    """The challenge's DVH metrics: D0.1cc and mean dose for OARs, D99/D95/D1 for targets.

    Args:
        dose: dose (Gy) on the structures' grid.
        structures: boolean masks by name; empty masks and structures that are neither an
            OpenKBP OAR nor a PTV<dose> target are left out, as the challenge does.
        voxel_cc: volume of one voxel in cm^3.
    """
    metrics = {}
    for name, mask in structures.items():
        is_oar = name in OARS
        if not (is_oar or target_prescription(name) is not None):
            continue
        doses = dose[mask]
        if doses.size == 0:
            continue
        doses = np.sort(doses.astype(np.float64))
        if is_oar:
            metrics[(name, "D0.1cc")] = dose_at_volume_cc(doses, 0.1, voxel_cc, presorted=True)
            metrics[(name, "mean")] = float(doses.mean())
        else:
            for metric in TARGET_METRICS:
                metrics[(name, metric)] = dose_at_volume_pct(doses, float(metric[1:]), presorted=True)
    return metrics


def dvh_comparison(
    pred: np.ndarray, ref: np.ndarray, structures: dict[str, np.ndarray], voxel_cc: float
) -> list[dict[str, object]]:
    """Every challenge DVH metric of one patient: rows of structure, metric, reference, predicted, abs_error (Gy).

    Args:
        pred: predicted dose (Gy) on the structures' grid.
        ref: reference dose (Gy) on the same grid.
        structures: boolean masks by name.
        voxel_cc: volume of one voxel in cm^3.
    """
    ref_metrics = openkbp_metrics(ref, structures, voxel_cc)
    pred_metrics = openkbp_metrics(pred, structures, voxel_cc)
    return [
        {"structure": name, "metric": metric, "reference": value, "predicted": pred_metrics[(name, metric)],
         "abs_error": abs(pred_metrics[(name, metric)] - value)}
        for (name, metric), value in ref_metrics.items()
    ]


def dvh_abs_errors(
    pred: np.ndarray, ref: np.ndarray, structures: dict[str, np.ndarray], voxel_cc: float
) -> dict[tuple[str, str], float]:
    """|metric(pred) - metric(ref)| for every challenge DVH metric of one patient (Gy)."""
    rows = dvh_comparison(pred, ref, structures, voxel_cc)
    return {(row["structure"], row["metric"]): row["abs_error"] for row in rows}

def openkbp_scores(dose_errors: list[float], dvh_errors: list[dict[tuple[str, str], float]]) -> tuple[float, float]:
    """Dose score (mean of per-patient dose errors) and DVH score (mean over every patient's metrics pooled).

    Args:
        dose_errors: ``dose_error`` of each patient.
        dvh_errors: ``dvh_abs_errors`` of each patient.
    """
    pooled = [error for patient in dvh_errors for error in patient.values()]
    return float(np.mean(dose_errors)), float(np.mean(pooled))
