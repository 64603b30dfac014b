"""Training of the dose refiner on a frozen base model's predictions (``doseseg train-dose-refiner``).

The base model predicts every training and validation patient once (cached with the
dose inputs, :mod:`refine_data`); the refiner then learns the correction with a masked
MAE that weights target edges and hot spots up (where the base model is too cold),
optionally plus the DVH-aware moment term of the dose training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common import training_loop as loop
from DoseSegLib.models.common.arrays import REFERENCE_GY, pad_to
from DoseSegLib.models.common.catalogue import find_model
from DoseSegLib.models.common.patient_cache import load_arrays
from DoseSegLib.models.common.training_loop import RunConfig, Step, Validation
from DoseSegLib.models.dose.augment import left_right_flip
from DoseSegLib.models.dose.refine_data import build_refine_cache
from DoseSegLib.models.dose.refine_net import RefineNet, RefineNetConfig, refine_box, refine_inputs
from DoseSegLib.models.dose.training import ValidationSet, moment_loss, random_crop

LOG_COLUMNS = ("epoch", "train_loss", "val_dose_score", "val_dvh_score", "lr", "seconds")
EDGE_VOXELS = 2  # half-width of the band around each target boundary


@dataclass
class RefineConfig(RunConfig):
    """Options of ``doseseg train-dose-refiner`` (saved beside the checkpoints).

    Attributes:
        base_model, base_weights: the frozen base dose model (catalogue name, default the default
            dose model or its base when that is a refiner; or a train-dose best.pt).
        structure_weight, edge_weight, hot_weight: extra loss weight inside targets and OARs,
            in a band of ``EDGE_VOXELS`` around target boundaries, and where the reference
            dose exceeds the target's prescription.
        moment_weight: weight of the DVH-aware moment term (Gy^2); 0 leaves it out.
        flip_prob: probability of a left-right mirror of a training patch.
        workers: processes preparing the cache of base predictions.
    """

    epochs: int = 200
    batch_size: int = 2
    patience: int = 6
    patch: tuple[int, int, int] = (96, 64, 96)
    base_model: str | None = None
    base_weights: str | None = None
    structure_weight: float = 0.5
    edge_weight: float = 1.0
    hot_weight: float = 1.0
    moment_weight: float = 0.0
    flip_prob: float = 0.5
    workers: int = 2
    net: RefineNetConfig = field(default_factory=RefineNetConfig)


def refine_patch(sample: dict[str, np.ndarray], patch: tuple[int, int, int], rng: np.random.Generator) -> dict:
    """A random ``patch``-sized crop of a cached box: "x" (refiner input, first = base dose) and "dose"."""
    crop = random_crop(sample["dose"].shape, patch, rng)
    inputs, _ = pad_to(sample["inputs"][(slice(None), *crop)].astype(np.float32), patch)
    first, _ = pad_to(sample["first"][crop][None].astype(np.float32), patch)
    dose, _ = pad_to(sample["dose"][crop][None], patch)
    x = refine_inputs(torch.from_numpy(first), torch.from_numpy(inputs))
    return {"x": x, "dose": torch.from_numpy(np.ascontiguousarray(dose))}


def flip_patch(patch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:func:`augment.left_right_flip` of a refiner patch (parotid channels swapped)."""
    flipped = left_right_flip({"ct": patch["x"][:2], "rest": patch["x"][2:], "dose": patch["dose"]})
    return {"x": torch.cat([flipped["ct"], flipped["rest"]]), "dose": flipped["dose"]}


def box_max(volume: torch.Tensor) -> torch.Tensor:
    """Maximum over a cube of side 2 * EDGE_VOXELS + 1 (grey dilation), as three separable 1D passes."""
    k = 2 * EDGE_VOXELS + 1
    for axis in range(3):
        size = [1, 1, 1]
        size[axis] = k
        padding = [s // 2 for s in size]
        volume = F.max_pool3d(volume, size, stride=1, padding=padding)
    return volume


def loss_weights(x: torch.Tensor, dose: torch.Tensor, config: RefineConfig) -> torch.Tensor:
    """Voxel weights ``(B, 1, X, Y, Z)``: the possible-dose mask, more in structures, target edges, hot spots."""
    targets, mask = x[:, 2:3], x[:, -1:]
    structures = torch.cat([targets, x[:, 4:-1]], dim=1).amax(dim=1, keepdim=True) > 0.5
    dilated, eroded = box_max(targets), -box_max(-targets)
    edges = (dilated - eroded) > 0.05  # outer and inner boundaries, and between prescription levels
    hot = (targets > 0.5) & (dose > targets * REFERENCE_GY)
    extra = config.structure_weight * structures + config.edge_weight * edges + config.hot_weight * hot
    return mask * (1 + extra.float())


def refine_loss(pred: torch.Tensor, x: torch.Tensor, dose: torch.Tensor, config: RefineConfig) -> torch.Tensor:
    """Weighted MAE in Gy over the possible-dose mask, plus ``moment_weight`` x the moment term."""
    mask = x[:, -1:]
    loss = (loss_weights(x, dose, config) * (pred - dose).abs()).sum() / mask.sum().clamp(min=1)
    if config.moment_weight:
        loss = loss + config.moment_weight * moment_loss(pred, dose, x[:, 2:])
    return loss


def train_refiner(data: Path, out: Path, config: RefineConfig, cache: Path | None = None,
                  device: torch.device | None = None) -> dict:
    """Train (or resume) the refiner; best.pt is selected by dose score + DVH score on validation.

    Writes into ``out``: last.pt, best.pt, log.csv (epoch 0: the base model alone) and config.json.
    """
    device = loop.start_run(config, device)
    if not config.base_weights:
        base = find_model("dose", config.base_model)
        if base.base and config.base_model:
            raise DoseSegError(f"dose model '{base.name}' is itself a refiner; name its base model ('{base.base}')")
        base = find_model("dose", base.base) if base.base else base  # the default model's base
        config = replace(config, base_model=base.name)
    net = RefineNet(config.net)
    loop.begin(out, config, net)
    cache = cache or out / "cache"
    folders = dict(zip(("train", "validation"), loop.split_folders(data, config), strict=True))
    files = {split: build_refine_cache(f, cache, config.base_model, config.base_weights, config.workers)
             for split, f in folders.items()}
    val_set = ValidationSet(files["validation"], folders["validation"])
    train_samples = [load_arrays(f) for f in files["train"]]

    def validate(epoch: int) -> Validation:
        dose_score, dvh_score = val_set.score_doses(
            lambda s: refine_box(net, s["first"], s["inputs"], device))
        scores = {"val_dose_score": dose_score, "val_dvh_score": dvh_score}
        meta = {"epoch": epoch, **scores, "patch": list(config.patch), "base_model": config.base_model}
        return Validation(dose_score + dvh_score, scores, meta)

    def log_base() -> None:
        dose_score, dvh_score = val_set.score_doses(lambda s: s["first"].astype(np.float32))
        with (out / "log.csv").open("a") as log_file:
            log_file.write(",".join(LOG_COLUMNS) + "\n" + f"0,nan,{dose_score:.6g},{dvh_score:.6g},nan,0\n")

    result = loop.run_epochs(out, net, config, device, LOG_COLUMNS, len(train_samples),
                             lambda epoch: _step(net, train_samples, config, device), validate, on_fresh_start=log_base)
    return {"val_dose_score": result["best_values"].get("val_dose_score", math.inf),
            "val_dvh_score": result["best_values"].get("val_dvh_score", math.inf), "epochs": result["epochs"]}


def _step(net: torch.nn.Module, samples: list[dict], config: RefineConfig, device: torch.device) -> Step:
    """The batch step: random crops of the cached boxes, randomly mirrored; the weighted loss."""

    def step(indices: np.ndarray, rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        patches = [refine_patch(samples[i], config.patch, rng) for i, rng in zip(indices, rngs, strict=True)]
        patches = [flip_patch(p) if rng.random() < config.flip_prob else p
                   for p, rng in zip(patches, rngs, strict=True)]
        x, dose = (torch.stack([p[key] for p in patches]).to(device) for key in ("x", "dose"))
        return {"loss": refine_loss(net(x), x, dose, config)}

    return step
