"""Normalising a predicted dose to the plan's prescription, by the convention the training plans follow.

Clinical plans are normalised so that a metric of the primary target (the highest-dose PTV, see
:func:`~DoseSegLib.core.case.primary_target`) equals a
fixed fraction of its prescription (e.g. D95% = 100 %, or the mean = 102 %). The convention of a
model's training plans is measured on its training split (:func:`measure_convention`,
``scripts/measure_prescription_convention.py``) and stored beside the model
(``<model>.prescription.json``); after prediction the dose is scaled so that the primary target's
metric meets it for this case's prescription (:func:`normalise_dose`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DoseSegLib.analysis.dvh import dose_at_volume_pct
from DoseSegLib.analysis.sampling import structure_doses
from DoseSegLib.core.case import Case, chosen_target, primary_target
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import DvhMethod
from DoseSegLib.core.volume import Volume

METRICS = ("D98%", "D95%", "D50%", "mean")
PLAUSIBLE_FACTOR = (0.7, 1.4)  # a larger correction means the prediction is far off, not mis-normalised


def target_metric(samples: np.ndarray, metric: str) -> float:
    """One of :data:`METRICS` (Gy) of a target's ascending dose samples."""
    if metric == "mean":
        return float(samples.mean())
    if metric not in METRICS:
        raise DoseSegError(f"unknown normalisation metric '{metric}' (one of {', '.join(METRICS)})")
    return dose_at_volume_pct(samples, float(metric[1:-1]), presorted=True)


@dataclass(frozen=True)
class Convention:
    """The primary target's ``metric`` equals ``ratio`` x its prescription on the training plans."""

    metric: str
    ratio: float

    @classmethod
    def load(cls, path: Path, sha256: str | None) -> Convention:
        try:
            data = json.loads(path.read_text())
            convention = cls(str(data["metric"]), float(data["ratio"]))
        except (OSError, ValueError, KeyError) as exc:
            raise DoseSegError(f"{path}: no prescription convention ({exc})") from exc
        if sha256 is not None and data.get("sha256") != sha256:
            raise DoseSegError(f"{path}: measured for other weights (sha256 {str(data.get('sha256'))[:12]}...)")
        return convention


@dataclass(frozen=True)
class Normalisation:
    """What :func:`normalise_dose` did (summary.json's ``normalisation``); ``why``: why ``structure`` is the
    primary target when other targets share or exceed its prescription ("" otherwise)."""

    structure: str
    metric: str
    prescription_gy: float
    factor: float
    before_gy: float
    after_gy: float
    why: str = ""

    def to_dict(self) -> dict:
        """summary.json's ``normalisation``; ``ratio``: ``after_gy`` / ``prescription_gy``, the convention."""
        return {"structure": self.structure, "metric": self.metric, "prescription_gy": self.prescription_gy,
                "factor": round(self.factor, 4), "before_gy": round(self.before_gy, 3),
                "after_gy": round(self.after_gy, 3), "ratio": round(self.after_gy / self.prescription_gy, 4),
                "why": self.why}


def normalisation_text(n: Mapping) -> str:
    """One line for a person from a ``Normalisation.to_dict()``: what was scaled, to what, and why."""
    return (f"normalised: {chosen_target(n['structure'], n.get('why', ''))} {n['metric']} "
            f"{n['before_gy']:.2f} -> {n['after_gy']:.2f} Gy = "
            f"{n['after_gy'] / n['prescription_gy']:.4g} x the {n['prescription_gy']:g} Gy prescription (the "
            f"convention of the model's training plans), factor {n['factor']:.3f}")


def normalise_dose(dose: Volume, case: Case, convention: Convention,
                   dvh_method: DvhMethod | str = DvhMethod.AUTO) -> tuple[Volume, Normalisation]:
    """``dose`` scaled so that the primary target's metric (:func:`~DoseSegLib.core.case.primary_target`) is
    ``convention.ratio`` x its prescription.

    Raises:
        DoseSegError: no target with a known prescription, or a correction outside
            :data:`PLAUSIBLE_FACTOR` (the prediction is not a plan for this prescription).
    """
    primary = primary_target(case)
    if primary is None:
        raise DoseSegError("no target with a known prescription to normalise to")
    name, prescription = primary.name, primary.prescription
    samples = structure_doses(dose, name, case.structures[name], case.fine_structures.get(name), dvh_method).doses
    before = target_metric(samples, convention.metric)
    wanted = convention.ratio * prescription
    factor = wanted / before if before > 0 else float("inf")
    low, high = PLAUSIBLE_FACTOR
    if not low <= factor <= high:
        raise DoseSegError(f"normalising {name} {convention.metric} from {before:.2f} to {wanted:.2f} Gy needs a "
                           f"factor {factor:.2f}, outside {low}-{high}: the dose is left as predicted")
    scaled = dose.with_array((dose.array * np.float32(factor)).astype(np.float32))
    return scaled, Normalisation(name, convention.metric, prescription, factor, before, wanted, primary.why)


def measure_convention(rows: Sequence[Mapping[str, float]], metric: str | None = None) -> dict:
    """Per metric, the spread of ``metric / prescription`` over training plans, and the convention:
    ``metric``, or when None the metric whose ratio varies least (robust CV: 1.4826 MAD / median)."""
    stats = {}
    for name in METRICS:
        ratios = np.array([row[name] for row in rows])
        median = float(np.median(ratios))
        mad = 1.4826 * float(np.median(np.abs(ratios - median)))
        q = np.percentile(ratios, [5, 25, 75, 95])
        stats[name] = {"median": median, "robust_cv": mad / median, "p5": q[0], "p25": q[1], "p75": q[2],
                         "p95": q[3], "n": len(ratios)}
    chosen = metric or min(METRICS, key=lambda m: stats[m]["robust_cv"])
    return {"metric": chosen, "ratio": round(stats[chosen]["median"], 4), "measured": stats}
