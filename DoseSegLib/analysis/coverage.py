"""How well calibrated intervals cover: leave-one-patient-out coverage, binomial CIs, spread-error ranks.

A record is one validation patient's cached metrics: ``predicted`` and ``reference`` dvh_metrics rows,
``samples`` (one list of rows per stochastic prediction) and ``targets`` (name -> prescription).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from DoseSegLib.analysis.intervals import FAMILIES, Observation, calibrate, spreads


def observations(records: Sequence[Mapping]) -> list[Observation]:
    """Every interval metric of every record, with its reference value."""
    out = []
    for record in records:
        reference = {r["structure"]: r for r in record["reference"]}
        for spread in spreads(record["predicted"], record["samples"], record["targets"]):
            out.append(Observation(spread, float(reference[spread.structure][spread.metric])))
    return out


def spearman(observed: Sequence[Observation]) -> float:
    """Spearman rank correlation of the spread with the absolute error."""
    from scipy.stats import spearmanr

    if len(observed) < 3:
        return float("nan")
    return float(spearmanr([o.spread.spread for o in observed], [o.error for o in observed]).statistic)


def method_score(records: Sequence[Mapping]) -> dict[str, float]:
    """Spearman (spread vs error) of each family and their mean: how well a sampling method ranks errors."""
    observed = observations(records)
    scores = {f: spearman([o for o in observed if o.spread.family == f]) for f in FAMILIES}
    scores["mean"] = float(np.nanmean(list(scores.values())))
    return {k: round(v, 3) for k, v in scores.items()}


def _binomial(hits: int, total: int) -> dict:
    from scipy.stats import binomtest

    ci = binomtest(hits, total).proportion_ci(0.95, method="exact")
    return {"coverage": round(hits / total, 3), "ci95": [round(ci.low, 3), round(ci.high, 3)], "n": total}


def coverage_report(records: Sequence[Mapping], level: float = 0.9) -> dict:
    """Leave-one-patient-out coverage of the ``level`` intervals, per family and pooled.

    Each patient's intervals come from a calibration on all the other patients. Per family: coverage
    with its exact (Clopper-Pearson) 95 % CI, mean interval width (Gy), mean absolute error and the
    Spearman correlation of spread with error; with the full calibration's quantile and floor.
    """
    per_patient = [observations([r]) for r in records]
    hits: dict[str, list[bool]] = {f: [] for f in FAMILIES}
    widths: dict[str, list[float]] = {f: [] for f in FAMILIES}
    for i, held_out in enumerate(per_patient):
        calibration = calibrate([o for j, obs in enumerate(per_patient) if j != i for o in obs])
        for o in held_out:
            half = calibration.half_width(o.spread, level)
            hits[o.spread.family].append(o.error <= half)
            widths[o.spread.family].append(2 * half)
    everything = [o for obs in per_patient for o in obs]
    full = calibrate(everything)
    families = {}
    for f in FAMILIES:
        chosen = [o for o in everything if o.spread.family == f]
        families[f] = {**_binomial(sum(hits[f]), len(hits[f])), "mean_width_gy": round(float(np.mean(widths[f])), 2),
                       "mean_abs_error_gy": round(float(np.mean([o.error for o in chosen])), 2),
                       "spearman": round(spearman(chosen), 3), "quantile": round(full.quantile(f, level), 3),
                       "floor_gy": round(full.floors[f], 3)}
    pooled = [h for f in FAMILIES for h in hits[f]]
    return {"level": level, "patients": len(records), "pooled": _binomial(sum(pooled), len(pooled)),
            "spearman_pooled": round(spearman(everything), 3), "families": families}
