"""What a case shows about how far its predicted DVH metrics may be from a plan's: the interval metrics
(OAR mean and near-max, target D95% and D2%) of a prediction, each with its difficulty features.

Per metric, features of its structure (distance to and overlap with the targets, volume, the predicted dose's
level and spread inside it) and of the whole case (its targets and organs on average): one patient's errors
move together (the planner's trade-off for that patient), so the case-level features carry part of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import cast

import numpy as np

from DoseSegLib.analysis.intervals import interval_metrics
from DoseSegLib.analysis.plan import PlanEvaluation
from DoseSegLib.analysis.site import NOT_AN_ORGAN
from DoseSegLib.core.case import Case, primary_target
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import mask_box

MARGIN = 5  # voxels around the structures' box where distances are computed
NEAR_MM = 5.0
OAR_DISTANCE = "log(1 + distance to the targets in mm)"
OAR_INSIDE = "fraction inside a target"
TARGET_LEVEL = "prescription / main prescription"
TARGET_VOLUME = "log10 volume (cc)"  # the same as VOLUME for a target: kept so that calibrations stay valid
PREDICTED_RX = "predicted / prescription"  # the structure's own prescription for a target, the main one for an OAR
LEVEL = "predicted / main prescription"
VOLUME = "log10 structure volume (cc)"
SPREAD = "predicted dose std / main prescription"
STRUCTURE_FEATURES = (
    LEVEL, VOLUME, SPREAD, f"fraction within {NEAR_MM:g} mm of a target",
    "log(1 + distance to the primary target in mm)", "fraction inside the primary target",
    "log(1 + median distance to the targets in mm)", "predicted dose p90 - p10 / main prescription",
)
CASE_FEATURES = (
    "number of targets", "main prescription (Gy)", "OARs: mean log(1 + distance to the targets)",
    "OARs: mean fraction inside a target", "OARs: mean predicted mean / main prescription",
    "targets: mean log10 volume", "targets: mean predicted D95% / main prescription", "OARs: mean log10 volume",
    "number of OARs", "OARs: mean predicted dose std / main prescription",
)

FEATURES_VERSION = 2  # raise when a feature's computation changes without its name (calibration caches)
FEATURE_NAMES = (OAR_DISTANCE, OAR_INSIDE, TARGET_LEVEL, TARGET_VOLUME, PREDICTED_RX, *STRUCTURE_FEATURES,
                 *CASE_FEATURES)


@dataclass(frozen=True)
class Item:
    """One interval metric of a case: its prediction and the difficulty features (name -> value)."""

    structure: str
    metric: str
    family: str
    predicted: float
    features: dict[str, float]


def _distances(case: Case, names: list[str], box: tuple[slice, ...]) -> np.ndarray:
    """Distance (mm) to the nearest voxel of the structures ``names`` over ``box``."""
    from scipy import ndimage

    union = np.logical_or.reduce([case.structures[n].array[box].astype(bool) for n in names])
    return ndimage.distance_transform_edt(~union, sampling=case.ct.spacing)


def _structure_features(case: Case, mask: np.ndarray, voxels: np.ndarray, main: float, to_targets: np.ndarray,
                        to_primary: np.ndarray) -> dict[str, float]:
    """The features of one structure (``mask`` over the distance maps' box, ``voxels`` its predicted doses)."""
    distances = to_targets[mask]
    values = (
        float(np.mean(voxels)) / main,
        math.log10(max(float(mask.sum()) * case.ct.voxel_volume_cc, 1e-3)),
        float(np.std(voxels)) / main,
        float(np.mean(distances <= NEAR_MM)),
        math.log1p(float(to_primary[mask].min())),
        float(np.mean(to_primary[mask] == 0)),
        math.log1p(float(np.median(distances))),
        float(np.percentile(voxels, 90) - np.percentile(voxels, 10)) / main,
    )
    return dict(zip(STRUCTURE_FEATURES, values, strict=True))


def _case_features(case: Case, main: float, items: list[Item], organs: Collection[str]) -> dict[str, float]:
    """The case-level features: its targets and its ``organs`` (the model's) on average; NaN where it has none
    (the bias model reads NaN as the training average). Other structures (rings, couch, an organ the model
    lacks) do not count: they would move every interval of the case."""
    oars = [i for i in items if i.family == "oar_mean" and i.structure in organs]
    targets = [i for i in items if i.family == "target_d95"]

    def mean(chosen: list[Item], value: Callable[[Item], float]) -> float:
        return float(np.mean([value(i) for i in chosen])) if chosen else math.nan

    values = (
        float(len(case.targets)), main, mean(oars, lambda i: i.features[OAR_DISTANCE]),
        mean(oars, lambda i: i.features[OAR_INSIDE]), mean(oars, lambda i: i.features[PREDICTED_RX]),
        mean(targets, lambda i: i.features[VOLUME]), mean(targets, lambda i: i.predicted / main),
        mean(oars, lambda i: i.features[VOLUME]), float(len(oars)), mean(oars, lambda i: i.features[SPREAD]),
    )
    return dict(zip(CASE_FEATURES, values, strict=True))


def case_items(case: Case, predicted: PlanEvaluation, organs: Collection[str]) -> list[Item]:
    """The interval metrics of an aligned case's prediction (``predicted``: its evaluation), with their features.

    OARs are the structures that are not targets; targets of unknown dose, structures that look like targets
    without a prescription (:attr:`~DoseSegLib.core.case.Case.unprescribed_targets`: CTV70, zPTV70_opt) and the
    body get no interval. ``organs``: the model's organs, the only OARs the case-level features average.
    """
    primary = primary_target(case)
    if primary is None:
        raise DoseSegError(f"{case.name}: no target with a known prescription: no calibrated interval")
    main = primary.prescription
    skipped = {*case.unprescribed_targets, *NOT_AN_ORGAN}  # unprescribed: the targets of unknown dose among them
    kept = [m.array.astype(bool) for n, m in case.structures.items() if n not in skipped]
    if not any(case.structures[n].array.any() for n in case.targets):
        raise DoseSegError(f"{case.name}: every target is empty: no calibrated interval")
    box = mask_box(np.logical_or.reduce(kept), MARGIN)  # the body left out: its box would be the whole CT
    to_targets = _distances(case, list(case.targets), box)
    to_primary = to_targets if len(case.targets) == 1 else _distances(case, [primary.name], box)
    items = []
    for row in predicted.metrics:
        name = str(row["structure"])
        if name in skipped or name not in predicted.doses:
            continue
        mask = case.structures[name].array[box].astype(bool)
        if not mask.any() or not predicted.doses[name].voxels.size:
            continue
        shared = _structure_features(case, mask, predicted.doses[name].voxels, main, to_targets, to_primary)
        is_target = name in case.targets
        for metric, family in interval_metrics(row, is_target):
            value = float(cast(float, row[metric]))
            if is_target:
                rx = case.targets[name]
                own = {TARGET_LEVEL: rx / main, TARGET_VOLUME: shared[VOLUME], PREDICTED_RX: value / rx}
            else:
                own = {OAR_DISTANCE: math.log1p(float(to_targets[mask].min())),
                       OAR_INSIDE: float(np.mean(to_targets[mask] == 0)), PREDICTED_RX: value / main}
            items.append(Item(name, metric, family, value, {**own, **shared}))
    whole = _case_features(case, main, items, organs)
    return [Item(i.structure, i.metric, i.family, i.predicted, {**i.features, **whole}) for i in items]
