"""Is a case inside a model's domain? Anatomy descriptors, their training distribution, a calibrated verdict.

A case is described by named numbers (:func:`describe_anatomy`: body extent and HU statistics at
the targets, target volume, each OAR's volume and in-plane position; the feature autoencoder adds
its latent distance and reconstruction error, see ``models.features.applicability``). Each number
becomes a robust z-score against the training patients (from the median, in units of the 2.5-97.5 %
range's width / 3.92, the standard deviation of a normal spread); the case's score is the largest.
The threshold is the split-conformal quantile of the validation patients' scores at
``1 - false_alarm``: a new patient like the validation ones exceeds it with probability at most
``false_alarm``. Target doses outside the trained levels are flagged regardless of the score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.orientation import Reorientation
from DoseSegLib.core.volume import Volume

BONE_HU = 300.0
LEVEL_TOLERANCE_GY = 3.0  # a prescription this far beyond the trained levels is outside them
ONE_SIDED = ("autoencoder latent distance", "autoencoder reconstruction error")
BODY_WIDTH, BODY_DEPTH = "body width L-R at the targets (mm)", "body depth A-P at the targets (mm)"
HU_MEAN, HU_STD, BONE = "mean HU in the body at the targets", "HU std in the body at the targets", \
    "bone fraction (> 300 HU) in the body at the targets"
TARGET_VOLUME = "target volume (log10 cc)"


def organ_features(name: str) -> tuple[str, str, str]:
    """The names of an OAR's volume and in-plane position descriptors."""
    return (f"{name} volume (log10 cc)", f"{name} offset L-R from the body centre (mm)",
            f"{name} offset A-P from the body centre (mm)")


def _canonical(volume: Volume, orientation: Reorientation) -> Volume:
    return orientation.to_canonical(volume)


def describe_anatomy(case: Case, body: Volume) -> dict[str, float]:
    """Descriptors of an aligned case (structures on the CT grid) with its ``body`` mask (CT grid).

    Sizes and positions are in mm along canonical L, P, S axes (whatever the stored axis order).
    """
    orientation = Reorientation.of(case.ct)
    ct, inside = _canonical(case.ct, orientation), _canonical(body, orientation).array.astype(bool)
    targets = [_canonical(case.structures[n], orientation).array for n in case.target_names]
    if not targets:
        raise DoseSegError(f"{case.name}: no target structure (PTV): applicability cannot be judged")
    union = np.logical_or.reduce(targets)
    slices = np.flatnonzero(union.any(axis=(0, 1)))
    sx, sy, _ = ct.spacing
    widths, depths = [], []
    for k in slices:
        xs, ys = np.flatnonzero(inside[:, :, k].any(axis=1)), np.flatnonzero(inside[:, :, k].any(axis=0))
        if xs.size:
            widths.append((xs[-1] - xs[0] + 1) * sx)
            depths.append((ys[-1] - ys[0] + 1) * sy)
    hu = ct.array[:, :, slices][inside[:, :, slices]].astype(np.float64)
    values = {
        BODY_WIDTH: float(np.median(widths)) if widths else 0.0,
        BODY_DEPTH: float(np.median(depths)) if depths else 0.0,
        HU_MEAN: float(hu.mean()) if hu.size else -1000.0,
        HU_STD: float(hu.std()) if hu.size else 0.0,
        BONE: float((hu > BONE_HU).mean()) if hu.size else 0.0,
        TARGET_VOLUME: math.log10(max(union.sum() * ct.voxel_volume_cc, 1e-3)),
    }
    for name in OARS:
        if name in case.structures and case.structures[name].array.any():
            values.update(_organ(name, _canonical(case.structures[name], orientation).array, inside, ct.spacing))
    return values


def _organ(name: str, mask: np.ndarray, body: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """Volume and in-plane offset of an organ from the body's centre over the organ's slices."""
    volume_key, lr_key, ap_key = organ_features(name)
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    organ = np.argwhere(mask).mean(axis=0)
    region = body[:, :, ks[0]:ks[-1] + 1]
    centre = np.argwhere(region).mean(axis=0) if region.any() else organ
    return {volume_key: math.log10(max(mask.sum() * float(np.prod(spacing)) / 1000.0, 1e-3)),
            lr_key: float((organ[0] - centre[0]) * spacing[0]), ap_key: float((organ[1] - centre[1]) * spacing[1])}


@dataclass(frozen=True)
class Spread:
    """A descriptor's training median, its 2.5-97.5 % range, and that range's width / 3.92 as its scale."""

    median: float
    scale: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        array = np.asarray(values, float)
        median = float(np.median(array))
        low, high = np.percentile(array, [2.5, 97.5])
        scale = (high - low) / 3.92  # the standard deviation for a normal spread, wider for heavy tails
        return cls(median, max(scale, 1e-6, 0.01 * abs(median)), float(low), float(high))

    def z(self, value: float, one_sided: bool = False) -> float:
        z = (value - self.median) / self.scale
        return max(z, 0.0) if one_sided else abs(z)


@dataclass
class Applicability:
    """The verdict for one case (what summary.json's ``applicability`` holds)."""

    in_distribution: bool
    score: float
    threshold: float
    reasons: list[str]
    implausible: dict[str, str] = field(default_factory=dict)  # OAR -> why its contour is unlike training

    def to_dict(self) -> dict:
        return {"in_distribution": self.in_distribution, "score": round(self.score, 3),
                "threshold": round(self.threshold, 3), "reasons": list(self.reasons)}


@dataclass
class Reference:
    """The training distribution of the descriptors, the trained target levels and the threshold."""

    spreads: dict[str, Spread]
    levels: tuple[float, float]
    threshold: float
    false_alarm: float
    latent_mean: list[float] = field(default_factory=list)
    latent_precision: list[list[float]] = field(default_factory=list)
    organ_threshold: float = float("inf")  # one organ's contour is implausible above it (see organ_scores)

    def scores(self, values: Mapping[str, float]) -> dict[str, float]:
        """The robust z-score of each descriptor this reference knows."""
        return {k: self.spreads[k].z(v, k in ONE_SIDED) for k, v in values.items() if k in self.spreads}

    def latent_distance(self, latent: Sequence[float] | np.ndarray) -> float:
        """Mahalanobis distance of an autoencoder latent vector from the training latents."""
        d = np.asarray(latent, float) - np.asarray(self.latent_mean)
        return float(np.sqrt(max(d @ np.asarray(self.latent_precision) @ d, 0.0)))

    def assess(self, values: Mapping[str, float], prescriptions: Mapping[str, float],
               auto: Sequence[str] = ()) -> Applicability:
        """The case's verdict from its descriptors and its targets' known prescriptions (Gy).

        ``auto``: auto-segmented OARs, judged as contours (``implausible``) but left out of the
        case's score (the validation cases that set the threshold had their own contours).
        """
        scores = self.scores(values)
        left_out = {k for name in auto for k in organ_features(name)}
        case_scores = {k: z for k, z in scores.items() if k not in left_out}
        score = max(case_scores.values(), default=0.0)
        reasons = [self._reason(k, values[k], z) for k, z in sorted(case_scores.items(), key=lambda kv: -kv[1])
                   if z > self.threshold]
        low, high = self.levels
        for name, gy in prescriptions.items():
            if not low - LEVEL_TOLERANCE_GY <= gy <= high + LEVEL_TOLERANCE_GY:
                reasons.append(f"{name} prescription {gy:g} Gy outside the trained levels ({low:g}-{high:g} Gy)")
        implausible = {}
        for name in OARS:
            bad = [self._reason(k, values[k], scores[k]) for k in organ_features(name)
                   if k in scores and scores[k] > self.organ_threshold]
            if bad:
                implausible[name] = "; ".join(bad)
        return Applicability(not reasons, score, self.threshold, reasons, implausible)

    def organ_scores(self, values: Mapping[str, float]) -> list[float]:
        """Each present OAR's largest descriptor z-score (volume, position): what ``organ_threshold`` bounds."""
        scores = self.scores(values)
        return [max(scores[k] for k in organ_features(name) if k in scores)
                for name in OARS if any(k in scores for k in organ_features(name))]

    def _reason(self, key: str, value: float, z: float) -> str:
        s = self.spreads[key]
        return f"{key} {value:.3g} (training 95 % range {s.low:.3g} to {s.high:.3g}; z {z:.1f})"

    def to_dict(self) -> dict:
        return {"spreads": {k: vars(s) for k, s in self.spreads.items()}, "levels": list(self.levels),
                "threshold": self.threshold, "false_alarm": self.false_alarm,
                "latent_mean": self.latent_mean, "latent_precision": self.latent_precision,
                "organ_threshold": self.organ_threshold}

    @classmethod
    def from_dict(cls, data: Mapping) -> Reference:
        try:
            return cls({k: Spread(**v) for k, v in data["spreads"].items()}, tuple(data["levels"]),
                       float(data["threshold"]), float(data["false_alarm"]), list(data.get("latent_mean", [])),
                       [list(r) for r in data.get("latent_precision", [])],
                       float(data.get("organ_threshold", float("inf"))))
        except (KeyError, TypeError, ValueError) as exc:
            raise DoseSegError(f"applicability calibration unreadable ({exc})") from exc


def fit_spreads(rows: Sequence[Mapping[str, float]]) -> dict[str, Spread]:
    """Each descriptor's training spread, from one row of descriptors per training patient."""
    keys = sorted({k for row in rows for k in row})
    return {k: Spread.of([row[k] for row in rows if k in row]) for k in keys
            if sum(k in row for row in rows) >= 5}


def latent_model(latents: np.ndarray, shrinkage: float = 0.1) -> tuple[list[float], list[list[float]]]:
    """Mean and precision matrix of training latent vectors ``(n, d)``, the covariance shrunk by
    ``shrinkage`` towards its diagonal (16 dimensions from ~170 patients: the raw inverse is noisy)."""
    covariance = np.cov(latents, rowvar=False)
    shrunk = (1 - shrinkage) * covariance + shrinkage * np.diag(np.diag(covariance))
    return latents.mean(axis=0).tolist(), np.linalg.inv(shrunk).tolist()


def conformal_threshold(scores: Sequence[float], false_alarm: float) -> float:
    """The ceil((n + 1)(1 - false_alarm))-th smallest validation score (split-conformal)."""
    ranked = sorted(scores)
    rank = math.ceil((len(ranked) + 1) * (1 - false_alarm))
    if rank > len(ranked):
        raise DoseSegError(f"a false-alarm rate of {false_alarm} needs more than {len(ranked)} validation patients")
    return float(ranked[rank - 1])


def leave_one_out_false_alarm(scores: Sequence[float], false_alarm: float) -> float:
    """Fraction of validation patients above the threshold calibrated on the others (an honest estimate)."""
    values = list(scores)
    hits = [values[i] > conformal_threshold(values[:i] + values[i + 1:], false_alarm) for i in range(len(values))]
    return float(np.mean(hits))
