"""Plan QA against a knowledge-based prediction: could this plan spare an organ more, or cover a target better?

Each interval metric of the prediction (OAR mean and near-max, target D95% and D2%) has a calibrated
interval of what plans like the training ones achieve for this anatomy (``analysis.difficulty``); the
plan's own value is ``within`` it, ``above achievable`` (an OAR dose higher than achievable: it could
be spared more; a target D2% hotter) or ``below achievable`` (a target D95% colder than achievable).
The ``note`` says when the interval is not calibrated for the row: a case outside the model's domain,
or an organ the model was not trained on (its interval is that of organs in general, by position).
A structure the plan dose's grid does not fully cover (its dose taken as 0 Gy outside), or whose coverage is
not known, is ``not evaluated``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import cast

from DoseSegLib.io.tables import Row

PLAN_QA_COLUMNS = ("structure", "metric", "plan", "predicted", "lower", "upper", "verdict", "note")
WITHIN, ABOVE, BELOW, NOT_EVALUATED = "within", "above achievable", "below achievable", "not evaluated"
VERDICTS = (WITHIN, ABOVE, BELOW, NOT_EVALUATED)
COVERAGE_TOLERANCE = 0.01  # a structure more than 1 % outside the plan dose's grid is not evaluated


OUTSIDE_DOMAIN = "case outside the model's domain: interval not calibrated for it"
UNKNOWN_ORGAN = "not an organ the model was trained on"
UNKNOWN_COVERAGE = "how much of the structure the plan dose covers is not known"


def plan_qa_rows(intervals: Sequence[Row], plan_metrics: Sequence[Row], coverage: Mapping[str, float],
                 outside_domain: bool = False, known: Collection[str] | None = None) -> list[Row]:
    """Rows of plan_qa.csv: each interval metric's plan value against the prediction's interval.

    ``known``: the structures the model was trained on (None: all); others, and every row of a case
    ``outside_domain``, get a note saying so (the verdict is then an extrapolation). ``coverage``: the
    fraction of each structure inside the plan dose's grid (``dosecheck.dose_coverage``; None: all covered);
    a structure more than :data:`COVERAGE_TOLERANCE` outside it is ``not evaluated``, its note saying how much
    the plan dose covers."""
    plan = {str(r["structure"]): r for r in plan_metrics}
    rows = []
    for interval in intervals:
        value = plan.get(str(interval["structure"]), {}).get(str(interval["metric"]))
        if value is None:
            continue
        lower, upper = float(cast(float, interval["lower"])), float(cast(float, interval["upper"]))
        value = float(cast(float, value))
        verdict = ABOVE if value > upper else BELOW if value < lower else WITHIN
        notes = _coverage_notes(coverage.get(str(interval["structure"])))
        verdict = NOT_EVALUATED if notes else verdict
        notes += [OUTSIDE_DOMAIN] if outside_domain else []
        if known is not None and interval["structure"] not in known:
            notes.append(UNKNOWN_ORGAN)
        rows.append({"structure": interval["structure"], "metric": interval["metric"], "plan": value,
                     "predicted": interval["predicted"], "lower": lower, "upper": upper, "verdict": verdict,
                     "note": "; ".join(notes)})
    return rows


def _coverage_notes(covered: float | None) -> list[str]:
    """Why a structure covered by the fraction ``covered`` of the plan dose's grid is not evaluated ([] if it is)."""
    if covered is None:
        return [UNKNOWN_COVERAGE]
    shown = math.floor(1000 * covered) / 10  # rounded down: 98.96 % is not shown as the 99 % tolerated
    return [] if covered >= 1 - COVERAGE_TOLERANCE else [f"plan dose covers {shown:g} % of the structure"]
