"""Training of the feature autoencoder on patient folders, selected by validation reconstruction error.

Writes into the run folder: config.json, log.csv (one row per epoch), last.pt (full
state, for resume) and best.pt (inference weights with the input spec and the
validation error next to the mean-image baseline; loadable with weights_only=True).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from DoseSegLib.io.patient import DOSE_FILE
from DoseSegLib.models.common import distributed
from DoseSegLib.models.common import training_loop as loop
from DoseSegLib.models.common.training_loop import RunConfig, Step, Validation
from DoseSegLib.models.features.data import FeatureInputs, build_cache, load_images
from DoseSegLib.models.features.net import FeatureNet, FeatureNetConfig

log = logging.getLogger(__name__)
LOG_COLUMNS = ("epoch", "train_mse", "val_mse", "val_baseline_mse", "lr", "seconds")


@dataclass
class FeatureTrainConfig(RunConfig):
    """Options of ``doseseg train-features`` (saved beside the checkpoints).

    Attributes:
        use_dose: dose channel on/off; None uses it when every training patient has a dose.nrrd.
        flip: also train on left-right mirrored images (an anatomically plausible patient).
        workers: processes preparing the cache.
    """

    epochs: int = 100
    batch_size: int = 4
    patience: int = 15
    inputs: FeatureInputs = field(default_factory=FeatureInputs)
    use_dose: bool | None = None
    flip: bool = True
    workers: int = 2
    net: FeatureNetConfig = field(default_factory=FeatureNetConfig)


def reconstruction_mse(net: FeatureNet, images: np.ndarray, device: torch.device, batch_size: int = 4) -> float:
    """Mean squared reconstruction error of ``net`` (eval mode) over ``images`` (N, C, X, Y, Z).

    Under torchrun each rank reconstructs its share of the images; every rank gets the mean.
    """
    net.eval()
    mine = images[list(distributed.shard(len(images)))]
    errors: list[float] = []
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            x = torch.from_numpy(mine[start: start + batch_size]).to(device)
            errors.extend(float(e) for e in ((net(x) - x) ** 2).flatten(1).sum(dim=1))
    return sum(distributed.gather(errors)) / images.size


def _resolve(config: FeatureTrainConfig, train_folders: list[Path]) -> FeatureTrainConfig:
    """The config with the dose choice made and the network's input matching the inputs."""
    dose = config.use_dose
    if dose is None:
        dose = all((f / DOSE_FILE).is_file() for f in train_folders)
        log.warning("dose channel %s (%s training patient has a dose.nrrd)", "on" if dose else "off",
                    "every" if dose else "not every")
    inputs = replace(config.inputs, dose=dose)
    return replace(config, use_dose=dose, inputs=inputs,
                   net=replace(config.net, in_channels=inputs.channels, grid=inputs.grid))


def train_features(data: Path, out: Path, config: FeatureTrainConfig, cache: Path | None = None,
                   device: torch.device | None = None) -> dict:
    """Train (or resume from ``out/last.pt``) the autoencoder; returns the best validation error.

    Args:
        data: dataset folder with train/ and validation/ patient folders.
        out: run folder.
        config: training options.
        cache: prepared-array cache (default ``out/cache``).
        device: torch device (default CUDA when available).
    """
    device = loop.start_run(config, device)
    train_folders, val_folders = loop.split_folders(data, config)
    config = _resolve(config, train_folders)
    net = FeatureNet(config.net).to(device)  # checks the grid before the slow cache
    loop.begin(out, config, net)
    model = distributed.wrap(net, device)
    cache = cache or out / "cache"
    train = load_images(build_cache(train_folders, cache, config.inputs, config.workers))
    val = load_images(build_cache(val_folders, cache, config.inputs, config.workers))
    mean_image = train.mean(axis=0, keepdims=True)
    baseline = float(((val - mean_image) ** 2).mean())

    def validate(epoch: int) -> Validation:
        val_mse = reconstruction_mse(net, val, device, config.batch_size)
        return Validation(val_mse, {"val_mse": val_mse, "val_baseline_mse": baseline},
                          _meta(config, epoch, val_mse, baseline, len(train), len(val)))

    result = loop.run_epochs(
        out, net, config, device, LOG_COLUMNS,
        len(train), lambda epoch: _step(model, train, config, device), validate, loss_name="mse",
    )
    return {"val_mse": result["best"], "val_baseline_mse": baseline, "epochs": result["epochs"]}


def _meta(config: FeatureTrainConfig, epoch: int, val_mse: float, baseline: float, n_train: int,
          n_val: int) -> dict:
    """What inference needs besides the weights, and how well they reconstruct."""
    return {
        "inputs": config.inputs.to_dict(),
        "channel_names": config.inputs.channel_names,
        "epoch": epoch,
        "val_mse": val_mse,
        "val_baseline_mse": baseline,
        "train_patients": n_train,
        "val_patients": n_val,
    }


def _step(net: torch.nn.Module, images: np.ndarray, config: FeatureTrainConfig, device: torch.device) -> Step:
    """The batch step: reconstruct a batch of images (each randomly mirrored left-right); the MSE."""

    def step(indices: np.ndarray, rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        batch = [images[i, :, ::-1] if config.flip and rng.random() < 0.5 else images[i]  # axis x: left-right
                 for i, rng in zip(indices, rngs, strict=True)]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(batch))).to(device)
        return {"mse": torch.nn.functional.mse_loss(net(x), x)}

    return step
