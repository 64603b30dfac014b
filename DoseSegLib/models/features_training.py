"""Training of the feature autoencoder on patient folders, selected by validation reconstruction error.

Writes into the run folder: config.json, log.csv (one row per epoch), last.pt (full
state, for resume) and best.pt (inference weights with the input spec and the
validation error next to the mean-image baseline; loadable with weights_only=True).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoints import resume, save_last
from .dose_training import _patient_folders, cosine_lr, save_weights
from .features_data import FeatureInputs, build_cache, load_images
from .features_net import FeatureNet, FeatureNetConfig

log = logging.getLogger(__name__)
LOG_COLUMNS = ("epoch", "train_mse", "val_mse", "val_baseline_mse", "lr", "seconds")


@dataclass
class FeatureTrainConfig:
    """Options of ``doseseg train-features`` (saved beside the checkpoints).

    Attributes:
        use_dose: dose channel on/off; None uses it when every training patient has a dose.nrrd.
        flip: also train on left-right mirrored images (an anatomically plausible patient).
        workers: processes preparing the cache.
    """

    inputs: FeatureInputs = field(default_factory=FeatureInputs)
    use_dose: bool | None = None
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-5
    flip: bool = True
    patience: int = 15
    max_minutes: float | None = None
    max_train_patients: int | None = None
    max_val_patients: int | None = None
    seed: int = 0
    threads: int | None = None
    workers: int = 2
    net: FeatureNetConfig = field(default_factory=FeatureNetConfig)


def reconstruction_mse(net: FeatureNet, images: np.ndarray, device: torch.device, batch_size: int = 4) -> float:
    """Mean squared reconstruction error of ``net`` (eval mode) over ``images`` (N, C, X, Y, Z)."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start: start + batch_size]).to(device)
            total += float(((net(x) - x) ** 2).sum())
    return total / images.size


def _resolve(config: FeatureTrainConfig, train_folders: list[Path]) -> FeatureTrainConfig:
    """The config with the dose choice made and the network's input matching the inputs."""
    dose = config.use_dose
    if dose is None:
        dose = all((f / "dose.nrrd").is_file() for f in train_folders)
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
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    train_folders = _patient_folders(data, "train")[: config.max_train_patients]
    val_folders = _patient_folders(data, "validation")[: config.max_val_patients]
    config = _resolve(config, train_folders)
    net = FeatureNet(config.net).to(device)  # checks the grid before the slow cache
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    cache = cache or out / "cache"
    train = load_images(build_cache(train_folders, cache, config.inputs, config.workers))
    val = load_images(build_cache(val_folders, cache, config.inputs, config.workers))
    mean_image = train.mean(axis=0, keepdims=True)
    baseline = float(((val - mean_image) ** 2).mean())

    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"epoch": 0, "best": float("inf"), "stale": 0, "minutes": 0.0}
    last = out / "last.pt"
    state = resume(last, net, optimizer, state, device)

    with (out / "log.csv").open("a", newline="") as log_file:
        writer = csv.writer(log_file)
        if log_file.tell() == 0:
            writer.writerow(LOG_COLUMNS)
        while state["epoch"] < config.epochs and state["stale"] < config.patience:
            epoch = state["epoch"] + 1
            t0 = time.monotonic()
            lr = cosine_lr(config, state["epoch"], state["minutes"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            train_mse = _train_epoch(net, optimizer, train, config, epoch, device)
            val_mse = reconstruction_mse(net, val, device, config.batch_size)
            if val_mse < state["best"]:
                state.update(best=val_mse, stale=0)
                save_weights(out / "best.pt", net, _meta(config, epoch, val_mse, baseline, len(train), len(val)))
            else:
                state["stale"] += 1
            state["epoch"] = epoch
            state["minutes"] += (time.monotonic() - t0) / 60
            writer.writerow([epoch, f"{train_mse:.6f}", f"{val_mse:.6f}", f"{baseline:.6f}", f"{lr:.3g}",
                             f"{time.monotonic() - t0:.1f}"])
            log_file.flush()
            save_last(last, net, optimizer, state)
            if config.max_minutes and state["minutes"] > config.max_minutes:
                log.warning("time limit of %.0f min reached after epoch %d", config.max_minutes, epoch)
                break
    return {"val_mse": state["best"], "val_baseline_mse": baseline, "epochs": state["epoch"]}


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


def _train_epoch(net: FeatureNet, optimizer: torch.optim.Optimizer, images: np.ndarray,
                 config: FeatureTrainConfig, epoch: int, device: torch.device) -> float:
    """One pass over the training images in random order (randomly mirrored); returns the mean MSE."""
    net.train()
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(images))
    losses = []
    bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch}/{config.epochs}", unit="batch",
               leave=False)
    for start in bar:
        batch = images[order[start: start + config.batch_size]]
        if config.flip and rng.random() < 0.5:
            batch = batch[:, :, ::-1]  # axis 0 of the grid is x (patient left-right)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        loss = torch.nn.functional.mse_loss(net(x), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(mse=f"{np.mean(losses):.4f}")
    return float(np.mean(losses))
