"""Intervals of predicted DVH metrics centred by what the case shows: a bias model and split-conformal widths.

A prediction misses in ways the case announces: a target's D95% predicted below its prescription
is usually where plans still reach it; an organ touching a target or carrying a high predicted dose
is under- or over-estimated; one patient's organs tend to be missed together. Per metric family (OAR
mean, OAR near-max, target D95%, target D2%) a ridge regression of the signed error (plan - prediction)
on the case's features (:mod:`~DoseSegLib.analysis.difficulty_features`, with one indicator per organ)
gives a bias. It is fitted on the training split's own predictions, whose errors are nearly as large as
unseen patients' (OAR mean |error| 1.42 Gy against 1.67 Gy on validation), so the validation split is
left whole for calibration: the interval is ``predicted + bias +- q_L`` with ``q_L`` the split-conformal
quantile of the validation residuals ``|error - bias|``, widened where needed to hold the prediction
itself (a DVH band always holds its curve). A metric with a feature beyond :data:`Z_LIMIT` training
standard deviations (another main prescription, an organ far larger than any trained) gets no bias and
the constant interval ``predicted +- q_L(|error|)``.

Why no width model: a normalised conformal scale (a ridge of ``log|residual|`` on the same features) ranks
the residuals a little (Spearman 0.10-0.30) but made the intervals wider on the training split's
cross-validation (``scripts/calibrate_difficulty.py --select``; see the model card).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from DoseSegLib.analysis.difficulty_features import Item
from DoseSegLib.analysis.intervals import FAMILIES
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.tables import Row

RIDGE = 0.01
Z_LIMIT = 4.0  # a metric with a feature beyond +-4 training standard deviations gets the constant interval
RELATIVE_FLOOR = 0.01  # a feature's scale is at least 1 % of its mean: 69.9 Gy is not "unlike 70 Gy"


def _ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge least squares with an unpenalised intercept (``x`` standardised, first column ones)."""
    penalty = ridge * len(x) * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


@dataclass(frozen=True)
class FamilyModel:
    """One family's bias model: ``bias = mean . [1, z]``, the expected plan-minus-prediction difference
    (e.g. a target's D95% predicted below what plans give), ``z`` the item's ``features`` (by name) and one
    indicator per organ of ``organs``, standardised by the training ``centre`` and ``scale`` (a missing case-level
    value, NaN, reads as the training average)."""

    features: tuple[str, ...]
    organs: tuple[str, ...]
    mean: tuple[float, ...]
    centre: tuple[float, ...]
    scale: tuple[float, ...]

    def row(self, item: Item) -> list[float]:
        """The item's values of the model's features and organ indicators."""
        try:
            values = [item.features[name] for name in self.features]
        except KeyError as exc:
            raise DoseSegError(f"difficulty calibration uses the feature {exc}, which this version does not "
                               "compute: recalibrate (scripts/calibrate_difficulty.py)") from exc
        return values + [float(item.structure == organ) for organ in self.organs]

    def z(self, item: Item) -> np.ndarray:
        """The item's standardised features (0 for a missing value)."""
        return np.nan_to_num((np.asarray(self.row(item), float) - self.centre) / self.scale, nan=0.0)

    def extrapolates(self, item: Item) -> bool:
        """True when a feature (not an organ indicator) lies beyond +-:data:`Z_LIMIT` training standard deviations
        (e.g. a main prescription more than 4 % from the training plans' 70 Gy): the bias would extrapolate."""
        return bool(np.any(np.abs(self.z(item)[:len(self.features)]) > Z_LIMIT))

    def bias(self, item: Item) -> float:
        """The expected plan-minus-prediction difference of ``item``."""
        return float(np.dot(self.mean, [1.0, *self.z(item)]))

    @classmethod
    def fit(cls, items: Sequence[Item], errors: np.ndarray, organs: Sequence[str] = (),
            ridge: float = RIDGE) -> FamilyModel:
        """Ridge least squares of the signed ``errors`` (plan - prediction) on the standardised features."""
        model = cls(tuple(items[0].features), tuple(organs), (), (), ())
        rows = np.array([model.row(item) for item in items], float)
        centre = np.nanmean(rows, axis=0)
        scale = np.maximum(np.nanstd(rows, axis=0), RELATIVE_FLOOR * np.abs(centre)) + 1e-9
        z = np.nan_to_num((rows - centre) / scale, nan=0.0)
        mean = _ridge(np.column_stack([np.ones(len(rows)), z]), errors, ridge)
        return cls(model.features, model.organs, *(tuple(float(c) for c in v) for v in (mean, centre, scale)))

    @classmethod
    def from_dict(cls, data: Mapping) -> FamilyModel:
        """Read :func:`dataclasses.asdict`'s form, checking that the lengths agree."""
        features, organs = tuple(str(f) for f in data["features"]), tuple(str(o) for o in data["organs"])
        mean, centre, scale = (tuple(float(v) for v in data[k]) for k in ("mean", "centre", "scale"))
        size = len(features) + len(organs)
        if len(mean) != size + 1 or len(centre) != size or len(scale) != size:
            raise ValueError(f"{len(features)} features and {len(organs)} organs but {len(mean)} coefficients, "
                             f"{len(centre)} centres, {len(scale)} scales")
        if not features or not all(math.isfinite(v) for v in (*mean, *centre)) or not all(
                math.isfinite(v) and v > 0 for v in scale):
            raise ValueError("no features, or a coefficient, centre or scale that is not a finite number (scales > 0)")
        return cls(features, organs, mean, centre, scale)


def conformal_quantile(scores: Sequence[float], level: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) level)-th smallest score."""
    ranked = sorted(scores)
    rank = math.ceil((len(ranked) + 1) * level)
    if not 0 < level < 1:
        raise DoseSegError(f"--level must be a fraction between 0 and 1, not {level}")
    if rank > len(ranked):
        raise DoseSegError(f"level {level} needs more than {len(ranked)} calibration values")
    return float(ranked[rank - 1])


@dataclass(frozen=True)
class Observation:
    """A patient's interval metric and its reference (planned) value."""

    patient: str
    item: Item
    reference: float

    @property
    def error(self) -> float:
        """Plan minus prediction (signed)."""
        return self.reference - self.item.predicted


@dataclass(frozen=True)
class DifficultyCalibration:
    """Per family: the bias model, the calibration residuals ``|error - bias|`` of the metrics it does not
    extrapolate (``scores``) and every calibration metric's ``|error|`` (``constant``), each sorted."""

    models: dict[str, FamilyModel]
    scores: dict[str, list[float]]
    constant: dict[str, list[float]]

    @property
    def organs(self) -> tuple[str, ...]:
        """The organs the bias models were fitted on (the only OARs the case-level features average)."""
        return self.models["oar_mean"].organs

    def interval(self, item: Item, level: float) -> tuple[float, float]:
        """``predicted + bias +- q_L``, or the constant interval ``predicted +- q_L(|error|)`` where the bias model
        would extrapolate; widened to hold the prediction itself, lower >= 0."""
        model = self.models[item.family]
        if model.extrapolates(item):
            centre, half = item.predicted, conformal_quantile(self.constant[item.family], level)
        else:
            centre, half = item.predicted + model.bias(item), conformal_quantile(self.scores[item.family], level)
        return max(min(centre - half, item.predicted), 0.0), max(centre + half, item.predicted)

    def rows(self, items: Sequence[Item], level: float) -> list[Row]:
        """Rows of dvh_intervals.csv."""
        out = []
        for item in items:
            lower, upper = self.interval(item, level)
            out.append({"structure": item.structure, "metric": item.metric, "predicted": item.predicted,
                        "lower": lower, "upper": upper, "level": level})
        return out

    def to_dict(self) -> dict:
        """The sidecar's ``difficulty`` (JSON-ready)."""
        return {"models": {f: asdict(m) for f, m in self.models.items()}, "scores": self.scores,
                "constant": self.constant}

    @classmethod
    def from_dict(cls, data: Mapping) -> DifficultyCalibration:
        """Read :meth:`to_dict`'s form; an earlier form or a damaged one is refused (recalibrate)."""
        try:
            models = {f: FamilyModel.from_dict(data["models"][f]) for f in FAMILIES}
            scores, constant = ({f: sorted(float(v) for v in data[k][f]) for f in FAMILIES}
                                for k in ("scores", "constant"))
            if not all(scores.values()) or not all(constant.values()):
                raise ValueError("a family without calibration scores")
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DoseSegError(f"difficulty calibration unreadable or of an earlier DoseSeg ({exc}): recalibrate "
                               "with scripts/calibrate_difficulty.py") from exc
        return cls(models, scores, constant)

    @classmethod
    def calibrate(cls, models: dict[str, FamilyModel], calibration: Sequence[Observation]) -> DifficultyCalibration:
        """The split-conformal scores of ``calibration`` (patients none of whom fitted ``models``)."""
        scores: dict[str, list[float]] = {}
        constant: dict[str, list[float]] = {}
        for family in FAMILIES:
            chosen = _family(calibration, family)
            model = models[family]
            scores[family] = sorted(abs(o.error - model.bias(o.item)) for o in chosen
                                    if not model.extrapolates(o.item))
            constant[family] = sorted(abs(o.error) for o in chosen)
        return cls(models, scores, constant)


def _family(observations: Sequence[Observation], family: str) -> list[Observation]:
    """The observations of one family (refused when fewer than 10)."""
    chosen = [o for o in observations if o.item.family == family]
    if len(chosen) < 10:
        raise DoseSegError(f"{len(chosen)} values of {family}: too few to calibrate")
    return chosen


def fit_models(training: Sequence[Observation]) -> dict[str, FamilyModel]:
    """Each family's bias model, fitted on the training split's predictions (OAR families with one indicator per
    organ they hold)."""
    models = {}
    for family in FAMILIES:
        chosen = _family(training, family)
        organs = sorted({o.item.structure for o in chosen}) if family.startswith("oar") else []
        models[family] = FamilyModel.fit([o.item for o in chosen], np.array([o.error for o in chosen]), organs)
    return models


def calibrate_difficulty(training: Sequence[Observation], calibration: Sequence[Observation]
                         ) -> DifficultyCalibration:
    """Bias models fitted on ``training`` and the residuals of every ``calibration`` observation (split
    conformal: the two sets share no patient)."""
    shared = {o.patient for o in training} & {o.patient for o in calibration}
    if shared:
        raise DoseSegError(f"{len(shared)} patients both fit and calibrate the intervals (e.g. {min(shared)})")
    return DifficultyCalibration.calibrate(fit_models(training), calibration)


def folds_of(patients: Sequence[str], folds: int) -> dict[str, int]:
    """Each patient's fold (sorted names dealt round-robin: reproducible)."""
    return {p: i % folds for i, p in enumerate(sorted(set(patients)))}


def held_out_report(training: Sequence[Observation], calibration: Sequence[Observation], level: float = 0.9,
                    folds: int = 5) -> dict:
    """Coverage and width on held-out calibration patients: each fold's intervals calibrated on the other folds.

    Per family and pooled: coverage of the adaptive interval, its mean width, the coverage and width
    of the constant interval ``+- q_L(|error|)`` calibrated on the same patients, and the Spearman rank
    correlation of the interval's width with the prediction's absolute error.
    """
    from scipy.stats import spearmanr

    models = fit_models(training)
    fold = folds_of([o.patient for o in calibration], folds)
    rows: dict[str, list[tuple[bool, float, bool, float, float]]] = {f: [] for f in FAMILIES}
    for k in range(folds):
        rest = [o for o in calibration if fold[o.patient] != k]
        intervals = DifficultyCalibration.calibrate(models, rest)
        for family in FAMILIES:
            constant = conformal_quantile(intervals.constant[family], level)
            for o in (o for o in calibration if fold[o.patient] == k and o.item.family == family):
                lower, upper = intervals.interval(o.item, level)
                rows[family].append((lower <= o.reference <= upper, upper - lower, abs(o.error) <= constant,
                                     2 * constant, abs(o.error)))

    def summary(chosen: list[tuple[bool, float, bool, float, float]]) -> dict:
        a = np.array(chosen, dtype=float)
        return {"n": len(a), "coverage": round(float(a[:, 0].mean()), 3),
                "mean_width_gy": round(float(a[:, 1].mean()), 2),
                "constant_coverage": round(float(a[:, 2].mean()), 3),
                "constant_width_gy": round(float(a[:, 3].mean()), 2),
                "width_ratio": round(float(a[:, 1].mean() / a[:, 3].mean()), 3),
                "spearman_width_error": round(float(spearmanr(a[:, 1], a[:, 4]).statistic), 3)}

    report = {f: summary(rows[f]) for f in FAMILIES}
    pooled = [r for f in FAMILIES for r in rows[f]]
    return {"level": level, "folds": folds, "patients": len(fold), "families": report, "pooled": summary(pooled)}
