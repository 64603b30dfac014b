"""Calibrated intervals of predicted DVH metrics (split-conformal scaling of the samples' spread).

For each metric family (OAR mean, OAR near-max, target D95%, target D2%) the calibration keeps the
nonconformity scores ``|reference - predicted| / (spread + floor)`` of the validation patients, where
``spread`` is the standard deviation of the metric over the stochastic samples and ``floor`` the
family's median spread (so a near-zero spread still gets an interval). The interval at level L is
``predicted +- q_L * (spread + floor)`` with ``q_L`` the ceil((n + 1) L)-th smallest score:
split-conformal, so about L of new patients' values fall inside when they resemble the validation set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from DoseSegLib.analysis.constraints import FAIL, PASS
from DoseSegLib.analysis.metric_names import MEAN, dose_at_cc, dose_at_pct
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.tables import Row

INTERVAL_COLUMNS = ("structure", "metric", "predicted", "lower", "upper", "level")
UNCERTAIN = "uncertain"
OAR_NEAR_MAX = (dose_at_cc(0.1), dose_at_pct(2))  # D0.1cc, or D2% for a structure under 0.1 cc
FAMILIES = ("oar_mean", "oar_near_max", "target_d95", "target_d2")


def interval_metrics(row: Row, is_target: bool) -> list[tuple[str, str]]:
    """(metric, family) pairs that get an interval in one dvh_metrics row."""
    if is_target:
        return [(dose_at_pct(95), "target_d95"), (dose_at_pct(2), "target_d2")]
    near_max = next(name for name in OAR_NEAR_MAX if row.get(name) is not None)
    return [(MEAN, "oar_mean"), (near_max, "oar_near_max")]


@dataclass(frozen=True)
class Spread:
    """One metric's deterministic prediction and the standard deviation of its stochastic samples."""

    structure: str
    metric: str
    family: str
    predicted: float
    spread: float


def spreads(predicted: Sequence[Row], samples: Sequence[Sequence[Row]], targets: Mapping[str, float]) -> list[Spread]:
    """The spread of each interval metric, from the dvh_metrics rows of the prediction and of each sample."""
    if len(samples) < 2:
        raise DoseSegError(f"a spread needs at least 2 samples, not {len(samples)}")
    by_name = [{str(r["structure"]): r for r in rows} for rows in samples]
    out = []
    for row in predicted:
        name = str(row["structure"])
        for metric, family in interval_metrics(row, name in targets):
            values = np.array([float(rows[name][metric]) for rows in by_name])
            out.append(Spread(name, metric, family, float(row[metric]), float(values.std(ddof=1))))
    return out


@dataclass(frozen=True)
class Calibration:
    """Per family: the floor added to the spread (Gy) and the sorted validation scores."""

    floors: dict[str, float]
    scores: dict[str, list[float]]

    def quantile(self, family: str, level: float) -> float:
        """The split-conformal score quantile of ``family`` at ``level`` (a fraction)."""
        if not 0 < level < 1:
            raise DoseSegError(f"--level must be a fraction between 0 and 1, not {level}")
        scores = self.scores[family]
        rank = math.ceil((len(scores) + 1) * level)
        if rank > len(scores):
            raise DoseSegError(f"level {level} needs more than the {len(scores)} calibration values of {family}; "
                               f"use at most {len(scores) / (len(scores) + 1):.3f}")
        return scores[rank - 1]

    def half_width(self, spread: Spread, level: float) -> float:
        return self.quantile(spread.family, level) * (spread.spread + self.floors[spread.family])

    def to_dict(self) -> dict:
        return {"floors": self.floors, "scores": self.scores}

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibration:
        missing = [f for f in FAMILIES if f not in data["floors"] or f not in data["scores"]]
        if missing:
            raise DoseSegError(f"uncertainty calibration lacks the families {', '.join(missing)}")
        return cls(dict(data["floors"]), {f: sorted(v) for f, v in data["scores"].items()})


@dataclass(frozen=True)
class Observation:
    """A validation value: its spread and the reference (planned) value."""

    spread: Spread
    reference: float

    @property
    def error(self) -> float:
        return abs(self.reference - self.spread.predicted)


def calibrate(observations: Sequence[Observation]) -> Calibration:
    """Floors (median spread) and sorted scores of each family from validation observations."""
    floors, scores = {}, {}
    for family in FAMILIES:
        chosen = [o for o in observations if o.spread.family == family]
        if not chosen:
            raise DoseSegError(f"no validation value of the family {family} to calibrate on")
        floor = float(np.median([o.spread.spread for o in chosen])) or 1e-3
        floors[family] = floor
        scores[family] = sorted(o.error / (o.spread.spread + floor) for o in chosen)
    return Calibration(floors, scores)


def interval_rows(spread_list: Sequence[Spread], calibration: Calibration, level: float = 0.9) -> list[Row]:
    """Rows of dvh_intervals.csv: each metric's prediction and its calibrated interval (lower >= 0)."""
    rows = []
    for s in spread_list:
        half = calibration.half_width(s, level)
        rows.append({"structure": s.structure, "metric": s.metric, "predicted": s.predicted,
                     "lower": max(s.predicted - half, 0.0), "upper": s.predicted + half, "level": level})
    return rows


def union_rows(rows: Sequence[Row], others: Sequence[Row]) -> list[Row]:
    """``rows`` with each interval widened to also hold ``others``' interval of the same metric."""
    by_key = {(r["structure"], r["metric"]): r for r in others}
    out = []
    for row in rows:
        other = by_key.get((row["structure"], row["metric"]))
        if other is None:
            out.append(dict(row))
            continue
        lower = min(float(cast(float, row["lower"])), float(cast(float, other["lower"])))
        upper = max(float(cast(float, row["upper"])), float(cast(float, other["upper"])))
        out.append({**row, "lower": lower, "upper": upper})
    return out


def mark_uncertain(goals: Sequence[Row], intervals: Sequence[Row]) -> list[Row]:
    """The goal rows with each pass or fail whose metric's interval straddles the limit marked "uncertain"."""
    by_key = {(r["structure"], r["metric"]): r for r in intervals}
    out = []
    for goal in goals:
        interval = by_key.get((goal["structure"], goal["metric"]))
        if interval is None or goal.get("result") not in (PASS, FAIL):
            out.append(dict(goal))
            continue
        low, high, limit = float(interval["lower"]), float(interval["upper"]), float(goal["limit"])
        note = f"{interval['level']:.0%} interval {low:.1f}-{high:.1f} Gy"
        if low < limit < high:
            out.append({**goal, "result": UNCERTAIN, "detail": f"{note} straddles the limit; {goal.get('detail', '')}"})
        else:
            out.append({**goal, "detail": f"{note}; {goal.get('detail', '')}"})
    return out
