"""Training of the segmentation network (BCE + Dice or DOSELO) on patient folders, validated by Dice.

Writes into the run folder: config.json, log.csv (one row per epoch), last.pt (full
state, for resume) and best.pt (inference weights with labels, inputs and the
per-label thresholds tuned on validation; loadable with weights_only=True).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import SegLoss
from DoseSegLib.models.common import distributed
from DoseSegLib.models.common import training_loop as loop
from DoseSegLib.models.common.arrays import to_device
from DoseSegLib.models.common.devices import autocast
from DoseSegLib.models.common.patient_cache import load_arrays
from DoseSegLib.models.common.training_loop import RunConfig, Step, Validation
from DoseSegLib.models.seg.augment import SegAugmentation, SegAugmentConfig
from DoseSegLib.models.seg.data import InputSpec, balanced_label_weights, build_cache, is_ct, random_patch
from DoseSegLib.models.seg.inference import overlap_counts, predict_probabilities, tune_thresholds
from DoseSegLib.models.seg.losses import load_frozen_dose_net, make_loss
from DoseSegLib.models.seg.net import SegNet, SegNetConfig

log = logging.getLogger(__name__)
LOG_COLUMNS = ("epoch", "train_loss", "train_seg", "train_dose", "val_dice", "lr", "seconds")


@dataclass
class SegTrainConfig(RunConfig):
    """Options of ``doseseg train-seg`` (saved beside the checkpoints).

    Attributes:
        loss: BCE + soft Dice, or DOSELO (a :class:`SegLoss` or its text).
        dose_weight: lambda of the DOSELO dose term (MSE in Gy^2).
        dose_model: catalogue name of the frozen dose network (DOSELO; default model when None).
        dose_weights: a train-dose best.pt to use instead of the catalogue.
        init_weights: a train-seg best.pt to start from (e.g. DOSELO fine-tuning of a baseline).
        workers: processes preparing the patient cache.
        foreground: share of training patches centred on a voxel of a random label.
        balanced: draw that label with probability inversely proportional to how many
            training patients have it (rare structures are seen as often as common ones).
        reset_labels: labels whose output bias is moved, before training, so that their mean
            logit is their prior log-odds (revives an output saturated at "never").
        truncate: share of training patches cut at a random axial plane and padded above it,
            as a scan with a short field of view.
    """

    loss: SegLoss = SegLoss.BCE_DICE
    dose_weight: float = 1.0
    dose_model: str | None = None
    dose_weights: str | None = None
    init_weights: str | None = None
    labels: tuple[str, ...] = OARS
    inputs: InputSpec = field(default_factory=InputSpec)
    val_every: int = 2
    patch: tuple[int, int, int] = (96, 80, 64)
    workers: int = 2
    foreground: float = 0.5
    balanced: bool = True
    reset_labels: tuple[str, ...] = ()
    truncate: float = 0.1
    net: SegNetConfig = field(default_factory=SegNetConfig)
    augment: SegAugmentConfig = field(default_factory=SegAugmentConfig)

    def __post_init__(self) -> None:
        self.loss = SegLoss.parse(self.loss)


def _check_patch(patch: tuple[int, ...], multiples: dict[str, int]) -> None:
    for what, multiple in multiples.items():
        if any(p % multiple for p in patch):
            raise DoseSegError(f"patch {tuple(patch)} must be a multiple of {multiple} on each axis ({what})")


class Validator:
    """Validation patients: Dice of each label at thresholds tuned over the set."""

    def __init__(self, samples: list[dict[str, np.ndarray]], patch: tuple[int, int, int]) -> None:
        self.samples, self.patch = samples, patch

    def counts(self, net: SegNet, device: torch.device,
               single_component_options: Sequence[Sequence[bool] | None] = (None,)) -> list[list[dict]]:
        """Overlap counts of every patient, once per post-processing option (see ``overlap_counts``).

        Under torchrun each rank predicts its share of the patients; every rank gets all counts.
        """
        net.eval()
        found: list[list[dict[str, np.ndarray]]] = [[] for _ in single_component_options]
        mine = [self.samples[i] for i in distributed.shard(len(self.samples))]
        for sample in tqdm(mine, desc="validation", unit="patient", leave=False, disable=not distributed.is_main()):
            probabilities = predict_probabilities(net, sample["image"], self.patch, device, amp=True)
            for counts, single in zip(found, single_component_options, strict=True):
                counts.append(overlap_counts(probabilities, sample["labels"], single))
        return [distributed.gather(counts) for counts in found]

    def tune(self, counts: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Per-label tuned thresholds and mean Dice at them (NaN for labels no patient has)."""
        return tune_thresholds(counts, [s["present"] for s in self.samples])

    def score(self, net: SegNet, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
        """Thresholds tuned on the raw probabilities and the mean Dice at them, per label."""
        return self.tune(self.counts(net, device)[0])


def train_segmentation(data: Path, out: Path, config: SegTrainConfig, cache: Path | None = None,
                       device: torch.device | None = None) -> dict:
    """Train (or resume from ``out/last.pt``) the segmentation network; returns the best validation Dice.

    Args:
        data: dataset folder with train/ and validation/ patient folders.
        out: run folder.
        cache: prepared-array cache (default ``out/cache``).
    """
    device = loop.start_run(config, device)
    config = replace(config, net=replace(config.net, in_channels=config.inputs.channels,
                                         out_channels=len(config.labels)))
    doselo = config.loss == SegLoss.DOSELO
    if doselo and not is_ct(config.inputs.images[0]):
        raise DoseSegError("the DOSELO loss needs ct.nrrd as the first input (the dose network's grid)")
    dose_weights = Path(config.dose_weights) if config.dose_weights else None
    dose_net = load_frozen_dose_net(config.dose_model, dose_weights).to(device) if doselo else None
    multiples = {"segmentation network": config.net.size_multiple}
    if dose_net is not None:
        multiples["dose network"] = dose_net.config.size_multiple
    _check_patch(config.patch, multiples)
    loss_fn = make_loss(config.loss, config.labels, dose_net, config.dose_weight).to(device)
    net = SegNet(config.net)
    loop.begin(out, config, net, device)
    model = distributed.wrap(net, device)
    cache = cache or out / "cache"
    train_folders, val_folders = loop.split_folders(data, config)
    cached = build_cache(train_folders, cache, config.inputs, config.labels, doselo, config.workers)
    train_samples = [load_arrays(f) for f in cached]
    cached = build_cache(val_folders, cache, config.inputs, config.labels, False, config.workers)
    validator = Validator([load_arrays(f) for f in cached], config.patch)

    def validate(epoch: int) -> Validation:
        thresholds, dice = validator.score(net, device)
        per_label = {f"dice_{n}": float(d) for n, d in zip(config.labels, dice, strict=True)}
        values = {"val_dice": float(np.nanmean(dice)), **per_label}
        return Validation(values["val_dice"], values, _meta(config, epoch, thresholds, dice))

    result = loop.run_epochs(
        out, net, config, device, [*LOG_COLUMNS, *(f"dice_{n}" for n in config.labels)],
        len(train_samples), lambda epoch: _step(model, loss_fn, train_samples, config, epoch, device),
        validate, maximize=True,
        on_fresh_start=(lambda: reset_output_bias(net, train_samples, config, device)) if config.reset_labels else None,
    )
    return {"val_dice": result["best"], "epochs": result["epochs"]}


@torch.no_grad()
def reset_output_bias(net: SegNet, samples: list[dict], config: SegTrainConfig, device: torch.device) -> None:
    """Shift the last convolution's bias of each of ``config.reset_labels`` so that the label's mean
    logit over patches centred on it equals the log-odds of its voxel share in those patches."""
    unknown = set(config.reset_labels) - set(config.labels)
    if unknown:
        raise DoseSegError(f"--reset-labels: {sorted(unknown)} not among the labels {list(config.labels)}")
    final = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    bias = final.bias
    assert bias is not None, "the output convolution has a bias"
    rng = np.random.default_rng(config.seed)
    net.eval()
    for name in config.reset_labels:
        index = config.labels.index(name)
        weights = np.eye(len(config.labels))[index]  # centre every patch on this label
        having = [s for s in samples if s["present"][index] and s["labels"][index].any()][:4]
        if not having:
            raise DoseSegError(f"--reset-labels: no training patient has {name}")
        patches = [random_patch(s, config.patch, rng, 1.0, weights) for s in having]
        image = torch.stack([p["image"] for p in patches]).to(device)
        share = float(torch.stack([p["labels"][index] for p in patches]).mean())
        mean_logit = float(net(image)[:, index].mean())
        bias[index] += math.log(share / (1 - share)) - mean_logit
        log.warning("%s: output bias moved by %+.1f (mean logit %.1f -> prior log-odds %.1f)", name,
                    math.log(share / (1 - share)) - mean_logit, mean_logit, math.log(share / (1 - share)))


def _meta(config: SegTrainConfig, epoch: int, thresholds: np.ndarray, dice: np.ndarray) -> dict:
    """What inference needs besides the weights, and how they were obtained."""
    doselo = config.loss == SegLoss.DOSELO
    return {
        "labels": list(config.labels),
        "thresholds": {n: float(t) for n, t in zip(config.labels, thresholds, strict=True)},
        "inputs": config.inputs.to_dict(),
        "patch": list(config.patch),
        "epoch": epoch,
        "val_dice": float(np.nanmean(dice)),
        "val_dice_per_label": {n: float(d) for n, d in zip(config.labels, dice, strict=True)},
        "loss": config.loss.value,  # plain text: weights files load with weights_only=True
        "dose_weight": config.dose_weight if doselo else None,
        "dose_model": (config.dose_weights or config.dose_model or "default") if doselo else None,
    }


def _step(net: torch.nn.Module, loss_fn: torch.nn.Module, samples: list[dict], config: SegTrainConfig, epoch: int,
          device: torch.device) -> Step:
    """The batch step of one epoch: augmented random patches, every term of ``loss_fn`` ("loss" descended)."""
    loss_fn.train()
    augment = SegAugmentation(config.augment, config.labels, seed=config.seed * 1000 + epoch)
    label_weights = balanced_label_weights(samples) if config.balanced else None

    def step(indices: np.ndarray, rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        patches = [augment(to_device(random_patch(samples[i], config.patch, rng, config.foreground, label_weights,
                                                  config.truncate), device))
                   for i, rng in zip(indices, rngs, strict=True)]
        batch = {key: torch.stack([p[key] for p in patches]) for key in patches[0]}
        with autocast(device):
            logits = net(batch["image"]).float()
        return loss_fn(logits, batch)

    return step
