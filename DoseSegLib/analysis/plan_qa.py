"""Plan QA against a knowledge-based prediction: could this plan spare an organ more, or cover a target better?

Each interval metric of the prediction (OAR mean and near-max, target D95% and D2%) has a calibrated
interval of what plans like the training ones achieve for this anatomy (``analysis.difficulty``); the
plan's own value is ``within`` it, ``above achievable`` (an OAR dose higher than achievable: it could
be spared more; a target D2% hotter) or ``below achievable`` (a target D95% colder than achievable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from DoseSegLib.io.tables import Row

PLAN_QA_COLUMNS = ("structure", "metric", "plan", "predicted", "lower", "upper", "verdict")
WITHIN, ABOVE, BELOW = "within", "above achievable", "below achievable"


def plan_qa_rows(intervals: Sequence[Row], plan_metrics: Sequence[Row]) -> list[Row]:
    """Rows of plan_qa.csv: each interval metric's plan value against the prediction's interval."""
    plan = {str(r["structure"]): r for r in plan_metrics}
    rows = []
    for interval in intervals:
        value = plan.get(str(interval["structure"]), {}).get(str(interval["metric"]))
        if value is None:
            continue
        lower, upper = float(cast(float, interval["lower"])), float(cast(float, interval["upper"]))
        value = float(cast(float, value))
        verdict = ABOVE if value > upper else BELOW if value < lower else WITHIN
        rows.append({"structure": interval["structure"], "metric": interval["metric"], "plan": value,
                     "predicted": interval["predicted"], "lower": lower, "upper": upper, "verdict": verdict})
    return rows
