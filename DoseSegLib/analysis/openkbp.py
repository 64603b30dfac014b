"""OpenKBP challenge scores: dose score and DVH score (../shared/data/README.md), with the challenge's definitions.

The challenge reads dose-grid voxels (no partial volume) and rounds D0.1cc to whole voxels; these
metrics are computed from the ``voxels`` of the shared dose samples, so nothing is sorted twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TypedDict

import numpy as np

from DoseSegLib.analysis import metric_names as mn
from DoseSegLib.analysis.dvh import percentile_sorted
from DoseSegLib.analysis.sampling import StructureDoses
from DoseSegLib.core.case import OARS, target_prescription


class ChallengeRow(TypedDict):
    """One OpenKBP DVH metric of one structure, predicted against reference (Gy)."""

    structure: str
    metric: str
    reference: float
    predicted: float
    abs_error: float


TARGET_PERCENTS = (99, 95, 1)
TARGET_METRICS = tuple(mn.dose_at_pct(p) for p in TARGET_PERCENTS)
OAR_CC = 0.1  # the OARs' near-maximum dose: D0.1cc (with their mean dose)


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
    if doses.size == 0:
        raise ValueError("structure has no voxel")
    doses = doses if presorted else np.sort(doses.astype(np.float64, copy=False), axis=None)
    n = min(max(1, round(volume_cc / voxel_cc)), doses.size)
    return float(percentile_sorted(doses, 100 - n / doses.size * 100))


SLAB = 16  # planes per step of dose_error


def dose_error(pred: np.ndarray, ref: np.ndarray, possible_dose_mask: np.ndarray) -> float:
    """Sum of |pred - ref| divided by the possible-dose-mask voxel count (Gy), the challenge's dose error.

    The challenge sums over the whole grid, its reference doses being zero outside the mask: dose
    predicted where none was delivered counts. A clinical reference dose is not zero there (a TPS grid
    reaching into air, or dose interpolated from a coarser grid past the mask's edge); those voxels, which
    no prediction masked to the possible-dose mask can match, are left out.
    """
    total = 0.0
    axis = 2 if pred.flags.f_contiguous else 0  # slabs across the slowest axis in memory
    for start in range(0, pred.shape[axis], SLAB):  # in slabs: no whole-grid float64 copies
        part = (slice(None),) * axis + (slice(start, start + SLAB),)
        counted = possible_dose_mask[part].astype(bool, copy=False) | (ref[part] == 0)
        difference = np.subtract(pred[part], ref[part], dtype=np.float64)
        total += float(np.abs(difference, out=difference).sum(where=counted))
    return total / np.count_nonzero(possible_dose_mask)


def challenge_metrics(voxels: Mapping[str, np.ndarray], voxel_cc: float, targets: Collection[str] | None = None,
                      oars: Collection[str] = OARS) -> dict[tuple[str, str], float]:
    """The challenge's DVH metrics: D0.1cc[Gy] and Mean[Gy] for OARs, D99%/D95%/D1%[Gy] for targets.

    Args:
        voxels: each structure's dose-grid voxel doses (Gy), ascending; empty ones and structures
            that are neither an OAR nor a target are left out, as the challenge does.
        voxel_cc: volume of one voxel in cm^3.
        targets: the targets (default: the challenge's, PTV<dose> names).
        oars: the OARs (default: the challenge's seven).
    """
    metrics = {}
    for name, doses in voxels.items():
        is_oar = name in oars
        is_target = target_prescription(name) is not None if targets is None else name in targets
        if doses.size == 0 or not (is_oar or is_target):
            continue
        if is_oar:
            metrics[(name, mn.dose_at_cc(OAR_CC))] = dose_at_volume_cc(doses, OAR_CC, voxel_cc, presorted=True)
            metrics[(name, mn.MEAN)] = float(doses.mean())
        else:
            values = percentile_sorted(doses, [100 - p for p in TARGET_PERCENTS])
            metrics.update({(name, m): float(v) for m, v in zip(TARGET_METRICS, values, strict=True)})
    return metrics


def voxel_doses(dose: np.ndarray, structures: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each structure's voxel doses (float64, ascending) from arrays on one grid."""
    return {name: np.sort(dose[mask].astype(np.float64)) for name, mask in structures.items()}


def openkbp_metrics(
    dose: np.ndarray, structures: Mapping[str, np.ndarray], voxel_cc: float, oars: Collection[str] = OARS,
    targets: Collection[str] | None = None,
) -> dict[tuple[str, str], float]:
    """``challenge_metrics`` of a dose array and boolean mask arrays on its grid."""
    return challenge_metrics(voxel_doses(dose, structures), voxel_cc, targets, oars)


def compare_challenge_metrics(
    pred: Mapping[str, StructureDoses], ref: Mapping[str, StructureDoses], voxel_cc: float,
    targets: Collection[str] | None = None, oars: Collection[str] = OARS,
) -> list[ChallengeRow]:
    """Every challenge DVH metric of one patient from shared dose samples: rows of structure, metric,
    reference, predicted, abs_error (Gy) (``targets``, ``oars``: see :func:`challenge_metrics`)."""
    ref_metrics = challenge_metrics({n: s.voxels for n, s in ref.items()}, voxel_cc, targets, oars)
    pred_metrics = challenge_metrics({n: s.voxels for n, s in pred.items()}, voxel_cc, targets, oars)
    return _rows(pred_metrics, ref_metrics)


def _rows(pred: dict[tuple[str, str], float], ref: dict[tuple[str, str], float]) -> list[ChallengeRow]:
    return [
        {"structure": name, "metric": metric, "reference": value, "predicted": pred[(name, metric)],
         "abs_error": abs(pred[(name, metric)] - value)}
        for (name, metric), value in ref.items()
    ]


def dvh_comparison(
    pred: np.ndarray, ref: np.ndarray, structures: Mapping[str, np.ndarray], voxel_cc: float,
    oars: Collection[str] = OARS, targets: Collection[str] | None = None,
) -> list[ChallengeRow]:
    """Every challenge DVH metric of one patient: rows of structure, metric, reference, predicted, abs_error (Gy).

    Args:
        pred: predicted dose (Gy) on the structures' grid.
        ref: reference dose (Gy) on the same grid.
        structures: boolean masks by name.
        voxel_cc: volume of one voxel in cm^3.
        oars: the organs scored as OARs.
        targets: the targets (default: the challenge's, PTV<dose> names).
    """
    return _rows(openkbp_metrics(pred, structures, voxel_cc, oars, targets),
                 openkbp_metrics(ref, structures, voxel_cc, oars, targets))


def dvh_abs_errors(
    pred: np.ndarray, ref: np.ndarray, structures: Mapping[str, np.ndarray], voxel_cc: float,
    oars: Collection[str] = OARS,
) -> dict[tuple[str, str], float]:
    """|metric(pred) - metric(ref)| for every challenge DVH metric of one patient (Gy; ``oars`` scored as OARs)."""
    rows = dvh_comparison(pred, ref, structures, voxel_cc, oars)
    return {(row["structure"], row["metric"]): row["abs_error"] for row in rows}


def openkbp_scores(dose_errors: list[float], dvh_errors: list[dict[tuple[str, str], float]]) -> tuple[float, float]:
    """Dose score (mean of per-patient dose errors) and DVH score (mean over every patient's metrics pooled).

    Args:
        dose_errors: ``dose_error`` of each patient.
        dvh_errors: ``dvh_abs_errors`` of each patient.
    """
    pooled = [error for patient in dvh_errors for error in patient.values()]
    return float(np.mean(dose_errors)), float(np.mean(pooled))
