"""Stochastic dose predictions for uncertainty: Monte-Carlo dropout, left-right mirror and CT noise.

Each sample runs the ordinary inference (``predict_case_dose``) with the network wrapped in a
:class:`StochasticNet`, so the working grid, the box and the sliding windows stay exactly those of
the deterministic prediction. The samples of one call are reproducible for a fixed seed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from DoseSegLib.analysis.difficulty import DifficultyCalibration
from DoseSegLib.analysis.difficulty_features import case_items
from DoseSegLib.analysis.dvh import DVH
from DoseSegLib.analysis.intervals import FAMILIES, Calibration, interval_rows, spreads, union_rows
from DoseSegLib.analysis.metric_names import MEAN, dose_at_pct
from DoseSegLib.analysis.plan import PlanEvaluation, evaluate_plan
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import DvhMethod
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.tables import Row
from DoseSegLib.models.common.mirror import lateral_pairs
from DoseSegLib.models.dose.augment import REST_PAIRS, left_right_flip
from DoseSegLib.models.dose.inputs import channel_names
from DoseSegLib.models.dose.predict import DoseModel, predict_case_dose

if TYPE_CHECKING:
    from DoseSegLib.models.dose.net import DoseNet

log = logging.getLogger(__name__)
METHODS = ("dropout", "dropout+mirror", "mirror+noise")
D95 = dose_at_pct(95)
CT_NOISE = 0.02  # std of the CT-channel noise, in the network's [-1, 1] scale (about 20 HU)


@dataclass(frozen=True)
class SamplingConfig:
    """How to draw stochastic predictions.

    Attributes:
        samples: number of stochastic predictions.
        method: ``dropout`` (Monte-Carlo dropout), ``dropout+mirror`` (dropout, every other sample
            mirrored left-right), or ``mirror+noise`` (every other sample mirrored, Gaussian noise on the CT).
        seed: seed of the first sample (sample i uses seed + i).
    """

    samples: int = 4
    method: str = "dropout+mirror"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise DoseSegError(f"unknown sampling method '{self.method}' (one of {', '.join(METHODS)})")
        if self.samples < 2:
            raise DoseSegError(f"uncertainty needs at least 2 samples, not {self.samples}")


class StochasticNet(nn.Module):
    """``net`` with dropout active, and optionally mirrored inputs and noisy CT, for one sample."""

    def __init__(self, net: nn.Module, dropout: bool, mirror: bool, ct_noise: float, seed: int,
                 pairs: list[tuple[int, int]] = REST_PAIRS) -> None:
        super().__init__()
        self.net, self.config = net, net.config
        self.dropout, self.mirror, self.ct_noise, self.pairs = dropout, mirror, ct_noise, pairs
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ct_noise > 0:
            noise = torch.randn(x[:, :1].shape, generator=self.generator) * self.ct_noise
            x = torch.cat([x[:, :1] + noise.to(x.device, x.dtype), x[:, 1:]], dim=1)
        if self.mirror:
            x = torch.stack([_flip_inputs(item, self.pairs) for item in x])
        out = self.net(x)
        return torch.flip(out, dims=(2,)) if self.mirror else out


def _flip_inputs(item: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    flipped = left_right_flip({"ct": item[:1], "rest": item[1:]}, pairs)
    return torch.cat([flipped["ct"], flipped["rest"]])


def _dropout_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def sample_doses(model: DoseModel, case: Case, config: SamplingConfig = SamplingConfig()) -> list[Volume]:
    """``config.samples`` stochastic dose predictions (Gy, CT grid) of an aligned ``case``."""
    dropout = config.method.startswith("dropout")
    layers = _dropout_layers(model.net)
    pairs = lateral_pairs(channel_names(model.oars)[1:])  # the model's own organs (a clinic model's site)
    if dropout and not layers:
        raise DoseSegError("this dose network has no dropout layer: use the sampling method mirror+noise")
    samples = []
    try:
        for layer in layers if dropout else ():
            layer.train()
        for i in range(config.samples):
            seed = config.seed + i
            mirror = "mirror" in config.method and i % 2 == 1
            noise = CT_NOISE if "noise" in config.method else 0.0
            wrapped = StochasticNet(model.net, dropout, mirror, noise, seed, pairs)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                # the wrapper stands in for the DoseNet: same call, same config
                samples.append(predict_case_dose(replace(model, net=cast("DoseNet", wrapped)), case))
    finally:
        for layer in layers:
            layer.eval()
    return samples


def dose_std(samples: list[Volume]) -> Volume:
    """Per-voxel standard deviation (Gy) of the samples, on their grid."""
    stack = np.stack([s.array for s in samples])
    return samples[0].with_array(stack.std(axis=0, ddof=1).astype(np.float32))


def calibration_path(model: DoseModel, folder: Path | None = None) -> Path:
    """The calibration sidecar of a catalogue model: ``<name>.uncertainty.json`` beside its weights."""
    if model.entry is None:
        raise DoseSegError("--uncertainty needs a catalogue model (its calibration ships with it), not --weights")
    return (folder or model.entry.file.parent) / f"{model.entry.name}.uncertainty.json"


def load_calibration(model: DoseModel, folder: Path | None = None) -> tuple[Calibration, SamplingConfig]:
    """The model's calibration and the sampling it was calibrated with; refuses one made for other weights."""
    path = calibration_path(model, folder)
    entry = model.entry
    assert entry is not None  # calibration_path refuses a model without one
    remedy = ("publish it again with `doseseg publish-model` on a cohort of at least 10 validation patients"
              if entry.user else "run scripts/calibrate_uncertainty.py for this model")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DoseSegError(f"{path}: no uncertainty calibration for model '{entry.name}' ({exc}); {remedy}") from exc
    if data.get("sha256") != entry.sha256:
        raise DoseSegError(f"{path}: calibrated for other weights (sha256 {str(data.get('sha256'))[:12]}...); "
                           f"{remedy}")
    return Calibration.from_dict(data["calibration"]), SamplingConfig(**data["sampling"])


def sample_plans(case: Case, samples: list[Volume],
                 dvh_method: DvhMethod | str = DvhMethod.AUTO) -> list[PlanEvaluation]:
    """The DVHs and DVH metrics of each sampled dose (no clinical goals)."""
    return [evaluate_plan(replace(case, dose=dose), constraints=[], dvh_method=dvh_method) for dose in samples]


def load_difficulty(model: DoseModel, folder: Path | None = None) -> DifficultyCalibration | None:
    """The model's case-adaptive interval calibration (``difficulty`` in its sidecar), None when it has none or
    an unreadable one (a warning)."""
    try:
        path = calibration_path(model, folder)
        data = json.loads(path.read_text())
    except (DoseSegError, OSError, ValueError):
        return None
    if model.entry is None or data.get("sha256") != model.entry.sha256 or "difficulty" not in data:
        return None
    try:
        return DifficultyCalibration.from_dict(data["difficulty"])
    except DoseSegError as exc:  # every run would fail: run without case-centred intervals and plan QA instead
        log.warning("%s: %s; no case-centred intervals or plan QA with this model", path, exc)
        return None


def case_intervals(calibration: DifficultyCalibration, case: Case, predicted: PlanEvaluation,
                   level: float = 0.9) -> list[Row]:
    """The calibrated intervals (dvh_intervals.csv rows) of an aligned case's predicted metrics; no sampling.

    The case-level features average the calibration's organs as the case has them, auto-contours included
    (the calibration's patients were never auto-segmented; see the model card for the measured effect).
    """
    return calibration.rows(case_items(case, predicted, calibration.organs), level)


@dataclass
class DoseUncertainty:
    """A prediction's uncertainty: per-voxel std (Gy), each sample's DVHs, and the calibrated DVH intervals."""

    std: Volume
    sample_plans: list[PlanEvaluation]
    intervals: list[Row]

    def dvh_band(self, structure: str, curve: DVH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dose bins (Gy) and the low and high volume (%) of ``curve`` (the structure's predicted DVH) shifted
        in dose by its interval (an OAR's mean, a target's D95%): the band the curve belongs to, holding it."""
        doses, volumes = curve.dose_gy, curve.volume_pct
        row = next((r for r in self.intervals if r["structure"] == structure and r["metric"] in (MEAN, D95)), None)
        if row is None:
            return doses, volumes, volumes
        predicted, lower, upper = (float(cast(float, row[k])) for k in ("predicted", "lower", "upper"))
        down, up = max(predicted - lower, 0.0), max(upper - predicted, 0.0)
        low = np.interp(doses + down, doses, volumes, left=float(volumes[0]), right=0.0)
        high = np.interp(doses - up, doses, volumes, left=float(volumes[0]), right=0.0)
        return doses, low, high


def predict_uncertainty(
    model: DoseModel, case: Case, predicted: PlanEvaluation, level: float = 0.9,
    dvh_method: DvhMethod | str = DvhMethod.AUTO, folder: Path | None = None, outside_domain: bool = False,
) -> DoseUncertainty:
    """Sample the model as calibrated, and give the std map and the intervals around ``predicted``'s metrics.

    The intervals are the case-centred ones (``analysis.difficulty``) when the model has them, else
    the spread-based ones; for a case ``outside_domain`` (see ``analysis.applicability``) their union
    with the spread-based ones, which widen where the samples disagree.

    Args:
        case: the aligned case the prediction was made for.
        predicted: the deterministic prediction's evaluation (its metrics are the intervals' centres).
        level: coverage of the intervals (a fraction).
        folder: where the calibration sidecar lies (the catalogue's folder when None).
        outside_domain: the case is outside the model's domain.
    """
    calibration, sampling = load_calibration(model, folder)
    calibration.quantile(FAMILIES[0], level)  # refuse a bad level before the costly sampling
    difficulty = load_difficulty(model, folder)
    samples = sample_doses(model, case, sampling)
    plans = sample_plans(case, samples, dvh_method)
    spread_rows = interval_rows(spreads(predicted.metrics, [p.metrics for p in plans], case.targets), calibration,
                                level)
    if difficulty is None or not case.targets:
        return DoseUncertainty(dose_std(samples), plans, spread_rows)
    rows = case_intervals(difficulty, case, predicted, level)
    return DoseUncertainty(dose_std(samples), plans, union_rows(rows, spread_rows) if outside_domain else rows)


def check_uncertainty(model: DoseModel, level: float, folder: Path | None = None) -> None:
    """Fail early (DoseSegError) when the model has no valid calibration or ``level`` is out of its reach."""
    calibration, _ = load_calibration(model, folder)
    calibration.quantile(FAMILIES[0], level)


def predict_dose_uncertainty(model: DoseModel, case: Case, dose: Volume, level: float = 0.9,
                             outside_domain: bool = False) -> DoseUncertainty:
    """:func:`predict_uncertainty` around the deterministic ``dose`` of an aligned ``case`` (predict-dose)."""
    return predict_uncertainty(model, case, evaluate_plan(replace(case, dose=dose), constraints=[]), level,
                               outside_domain=outside_domain)


def write_uncertainty(folder: Path, uncertainty: DoseUncertainty) -> None:
    """``dose_std.nrrd`` and ``dvh_intervals.csv`` into an existing output folder."""
    from DoseSegLib.analysis.intervals import INTERVAL_COLUMNS
    from DoseSegLib.io.patient import write_dose
    from DoseSegLib.io.tables import write_csv

    write_dose(folder / "dose_std.nrrd", uncertainty.std)
    write_csv(folder / "dvh_intervals.csv", uncertainty.intervals, INTERVAL_COLUMNS)
