"""Training of the dose network on cached OpenKBP patients, with validation by OpenKBP scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from DoseSegLib.analysis.openkbp import dvh_abs_errors, openkbp_scores
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import OARS
from DoseSegLib.io.cohort.site import read_site
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.common import distributed
from DoseSegLib.models.common import training_loop as loop
from DoseSegLib.models.common.arrays import REFERENCE_GY, pad_to, to_device
from DoseSegLib.models.common.devices import autocast
from DoseSegLib.models.common.patient_cache import load_arrays
from DoseSegLib.models.common.training_loop import RunConfig, Step, Validation
from DoseSegLib.models.dose.augment import AugmentConfig, DoseAugmentation
from DoseSegLib.models.dose.cache import build_cache
from DoseSegLib.models.dose.inference import predict_box
from DoseSegLib.models.dose.inputs import channel_names
from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig

LOG_COLUMNS = ("epoch", "train_loss", "val_dose_score", "val_dvh_score", "lr", "seconds")


@dataclass
class TrainConfig(RunConfig):
    """Options of ``doseseg train-dose`` (saved beside the checkpoints).

    Attributes:
        structure_weight: extra loss weight inside targets and OARs.
        moment_weight: weight of the DVH-aware :func:`moment_loss` (Gy^2) added to the MAE; 0 leaves it out.
        init_weights: inference weights to start from (same architecture).
        site: the cohort's site config (``site.json`` of ``--data``, set by :func:`train_dose`); None for
            OpenKBP's structures.
    """

    epochs: int = 30
    val_every: int = 3
    patience: int = 4
    patch: tuple[int, int, int] = (96, 64, 80)
    structure_weight: float = 0.5
    moment_weight: float = 0.0
    init_weights: str | None = None
    net: DoseNetConfig = field(default_factory=DoseNetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    site: dict | None = None

    @property
    def oars(self) -> tuple[str, ...]:
        """The organs of the network's input channels: the site's, else OpenKBP's."""
        return tuple(self.site["oars"]) if self.site else OARS


def random_crop(size: tuple[int, ...], patch: tuple[int, int, int], rng: np.random.Generator) -> tuple[slice, ...]:
    """Slices of a random ``patch``-sized crop of an array of spatial ``size`` (shorter where it is smaller)."""
    start = [int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(size, patch, strict=True)]
    return tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))


def random_patch(sample: dict[str, np.ndarray], patch: tuple[int, int, int], rng: np.random.Generator) -> dict:
    """A random ``patch``-sized crop of a cached box (padded with air where the box is smaller)."""
    box = (slice(None), *random_crop(sample["dose"].shape, patch, rng))
    padded, _ = pad_to(sample["inputs"][box].astype(np.float32), patch)
    dose, _ = pad_to(sample["dose"][None][box], patch)
    inputs = torch.from_numpy(np.ascontiguousarray(padded))
    return {"ct": inputs[:1], "rest": inputs[1:], "dose": torch.from_numpy(np.ascontiguousarray(dose))}


def masked_mae(pred: torch.Tensor, dose: torch.Tensor, rest: torch.Tensor, structure_weight: float) -> torch.Tensor:
    """MAE in Gy inside the possible-dose mask, structures (targets and OARs) weighted up.

    Normalised by the mask voxels of the global batch (all ranks under torchrun).
    """
    mask = rest[:, -1:]
    structure_channels = torch.cat([rest[:, :1], rest[:, 2:-1]], dim=1)  # targets and OARs, not proximity
    structures = (structure_channels > 0.5).any(dim=1, keepdim=True).float()
    weight = mask * (1 + structure_weight * structures)
    return (weight * (pred - dose).abs()).sum() / distributed.mean_count(mask.sum()).clamp(min=1)


MOMENTS = (1, 2, 10)  # mean dose, spread and a soft maximum of each structure


def structure_regions(rest: torch.Tensor) -> torch.Tensor:
    """Float masks ``(B, 9, X, Y, Z)``: all targets, the top prescription level (70 Gy), each OAR."""
    targets = rest[:, :1]
    return torch.cat([targets > 0.5, targets > 0.95, rest[:, 2:-1] > 0.5], dim=1).float()


def moment_loss(pred: torch.Tensor, dose: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """DVH-aware term in Gy^2: mean squared difference of the dose moments of each structure in the patch.

    The moment of order p of a structure's doses is mean(d^p)^(1/p): the mean dose (p=1) and,
    as p grows, a soft maximum; matching them matches the shape of the DVH (moment loss of
    Jhanwar et al., Med. Phys. 2022). Structures absent from a patch do not count; the
    mean is over the structures present in the global batch (all ranks under torchrun).
    """
    regions = structure_regions(rest)
    counts = regions.sum(dim=(2, 3, 4))
    present = counts > 0

    def moments(values: torch.Tensor, p: int) -> torch.Tensor:
        scaled = (values.clamp(min=0) / REFERENCE_GY) ** p  # in units of 70 Gy: no overflow at p=10
        mean = (regions * scaled).sum(dim=(2, 3, 4)) / counts.clamp(min=1)
        return REFERENCE_GY * mean.clamp(min=1e-12) ** (1.0 / p)

    errors = torch.cat([(moments(pred, p) - moments(dose, p))[present] ** 2 for p in MOMENTS])
    return (errors.sum() + pred.sum() * 0.0) / distributed.mean_count(present.sum() * len(MOMENTS)).clamp(min=1)


class ValidationSet:
    """Validation patients: cached boxes plus full-grid masks for exact OpenKBP scoring."""

    def __init__(self, cache_files: list[Path], folders: list[Path], oars: Sequence[str] = OARS) -> None:
        self.oars = tuple(oars)
        self.samples = [load_arrays(f) for f in cache_files]
        self.structures, self.voxel_cc, self.mask_counts = [], [], []
        for folder in folders:
            case = align_case(read_patient(folder))
            self.structures.append({n: v.array for n, v in case.structures.items()})
            self.voxel_cc.append(case.ct.voxel_volume_cc)
            self.mask_counts.append(int(case.require_possible_dose_mask().array.sum()))
            self.grid = case.ct.shape

    def score(self, net: DoseNet, roi: tuple[int, int, int], device: torch.device) -> tuple[float, float]:
        """Dose and DVH scores of ``net`` over the set (split between the ranks under torchrun)."""
        return self.score_doses(lambda sample: predict_box(net, sample["inputs"], roi, device,
                                                           amp=device.type == "cuda"))

    def score_doses(self, predict: Callable[[dict[str, np.ndarray]], np.ndarray]) -> tuple[float, float]:
        """Dose and DVH scores of ``predict(cached sample) -> dose (Gy) on its box`` over the set (split between
        the ranks under torchrun)."""
        dose_errors, dvh_errors = [], []
        for i in distributed.shard(len(self.samples)):
            sample = self.samples[i]
            box = tuple(slice(int(a), int(b)) for a, b in sample["box"])
            pred, ref = np.zeros(self.grid, np.float32), np.zeros(self.grid, np.float32)
            pred[box] = predict(sample)
            ref[box] = sample["dose"]
            dose_errors.append(float(np.abs(pred - ref).sum() / self.mask_counts[i]))
            dvh_errors.append(dvh_abs_errors(pred, ref, self.structures[i], self.voxel_cc[i], self.oars))
        return openkbp_scores(distributed.gather(dose_errors), distributed.gather(dvh_errors))


def train_dose(data: Path, out: Path, config: TrainConfig, cache: Path | None = None,
               device: torch.device | None = None) -> dict:
    """Train (or resume) the dose network; returns the best validation scores.

    Writes into ``out``: last.pt (full state, for resume), best.pt (inference weights),
    log.csv (one row per epoch) and config.json. A ``data/site.json`` (``doseseg build-cohort``) sets the
    organs of the input channels; it is recorded in config.json and in best.pt's metadata.
    """
    config = with_site(config, data)
    device = loop.start_run(config, device)
    net = DoseNet(config.net)
    loop.begin(out, config, net, device)
    model = distributed.wrap(net, device)
    train_folders, val_folders = loop.split_folders(data, config)
    cache = cache or out / "cache"
    train_files = build_cache(train_folders, cache, oars=config.oars)
    val_set = ValidationSet(build_cache(val_folders, cache, oars=config.oars), val_folders, config.oars)
    train_samples = [load_arrays(f) for f in train_files]
    site_meta = {"oars": list(config.oars), "site": config.site["site"]} if config.site else {}

    def validate(epoch: int) -> Validation:
        dose_score, dvh_score = val_set.score(net, config.patch, device)
        scores = {"val_dose_score": dose_score, "val_dvh_score": dvh_score}
        return Validation(dose_score, scores, {"epoch": epoch, **scores, "patch": list(config.patch), **site_meta})

    result = loop.run_epochs(
        out, net, config, device, LOG_COLUMNS,
        len(train_samples), lambda epoch: _step(model, train_samples, config, epoch, device), validate,
    )
    return {"val_dose_score": result["best"], "val_dvh_score": result["best_values"].get("val_dvh_score", math.inf),
            "epochs": result["epochs"]}


def with_site(config: TrainConfig, data: Path) -> TrainConfig:
    """``config`` with the site config of ``data`` (when it has one) and input channels to match."""
    site = read_site(data)
    if site is None:
        return config
    channels = len(channel_names(site.oars))
    recorded = {**site.to_dict(), "folder": str(Path(data).resolve())}  # publish-model calibrates on its validation
    return replace(config, site=recorded, net=replace(config.net, in_channels=channels))


def _step(net: torch.nn.Module, samples: list[dict], config: TrainConfig, epoch: int, device: torch.device) -> Step:
    """The batch step of one epoch: augmented random patches, masked MAE (+ the DVH moment term)."""
    augment = DoseAugmentation(config.augment, seed=config.seed * 1000 + epoch, channels=channel_names(config.oars))

    def step(indices: np.ndarray, rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        patches = [augment(to_device(random_patch(samples[i], config.patch, rng), device))
                   for i, rng in zip(indices, rngs, strict=True)]
        ct, rest, dose = (torch.stack([p[key] for p in patches]) for key in ("ct", "rest", "dose"))
        with autocast(device):
            pred = net(torch.cat([ct, rest], dim=1)).float()
        loss = masked_mae(pred, dose, rest, config.structure_weight)
        if config.moment_weight:
            loss = loss + config.moment_weight * moment_loss(pred, dose, rest)
        return {"loss": loss}

    return step
