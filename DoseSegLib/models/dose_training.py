"""Training of the dose network on cached OpenKBP patients, with validation by OpenKBP scores."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..alignment import align_case
from ..errors import DoseSegError
from ..io import read_patient
from ..scores import dvh_abs_errors, openkbp_scores
from .checkpoints import resume, save_last
from .devices import autocast
from .dose_augment import AugmentConfig, DoseAugmentation
from .dose_cache import build_cache, load_cached
from .dose_inference import pad_to, predict_box
from .dose_net import DoseNet, DoseNetConfig

log = logging.getLogger(__name__)
LOG_COLUMNS = ("epoch", "train_loss", "val_dose_score", "val_dvh_score", "lr", "seconds")


@dataclass
class TrainConfig:
    """Options of ``doseseg train-dose`` (saved beside the checkpoints)."""

    epochs: int = 30
    batch_size: int = 2
    patch: tuple[int, int, int] = (96, 64, 80)
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-5
    structure_weight: float = 0.5
    val_every: int = 3
    patience: int = 4
    max_minutes: float | None = None
    max_train_patients: int | None = None
    max_val_patients: int | None = None
    seed: int = 0
    threads: int | None = None
    init_weights: str | None = None
    net: DoseNetConfig = field(default_factory=DoseNetConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def random_patch(sample: dict[str, np.ndarray], patch: tuple[int, int, int], rng: np.random.Generator) -> dict:
    """A random ``patch``-sized crop of a cached box (padded with air where the box is smaller)."""
    size = sample["dose"].shape
    start = [int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(size, patch)]
    box = (slice(None), *(slice(s, s + p) for s, p in zip(start, patch)))
    inputs, _ = pad_to(sample["inputs"][box].astype(np.float32), patch)
    dose, _ = pad_to(sample["dose"][None][box], patch)
    inputs = torch.from_numpy(np.ascontiguousarray(inputs))
    return {"ct": inputs[:1], "rest": inputs[1:], "dose": torch.from_numpy(np.ascontiguousarray(dose))}


def to_device(patch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The patch's tensors on ``device`` (augmentation then runs there too)."""
    return {key: value.to(device, non_blocking=True) for key, value in patch.items()}


def masked_mae(pred: torch.Tensor, dose: torch.Tensor, rest: torch.Tensor, structure_weight: float) -> torch.Tensor:
    """MAE in Gy inside the possible-dose mask, structures (targets and OARs) weighted up."""
    mask = rest[:, -1:]
    structure_channels = torch.cat([rest[:, :1], rest[:, 2:-1]], dim=1)  # targets and OARs, not proximity
    structures = (structure_channels > 0.5).any(dim=1, keepdim=True).float()
    weight = mask * (1 + structure_weight * structures)
    return (weight * (pred - dose).abs()).sum() / mask.sum().clamp(min=1)


class ValidationSet:
    """Validation patients: cached boxes plus full-grid masks for exact OpenKBP scoring."""

    def __init__(self, cache_files: list[Path], folders: list[Path]) -> None:
        self.samples = [load_cached(f) for f in cache_files]
        self.structures, self.voxel_cc, self.mask_counts = [], [], []
        for folder in folders:
            case = align_case(read_patient(folder))
            self.structures.append({n: v.array for n, v in case.structures.items()})
            self.voxel_cc.append(case.ct.voxel_volume_cc)
            self.mask_counts.append(int(case.possible_dose_mask.array.sum()))
            self.grid = case.ct.shape

    def score(self, net: DoseNet, roi: tuple[int, int, int], device: torch.device) -> tuple[float, float]:
        """Dose and DVH scores of ``net`` over the set."""
        dose_errors, dvh_errors = [], []
        for i, sample in enumerate(self.samples):
            box = tuple(slice(int(a), int(b)) for a, b in sample["box"])
            pred, ref = np.zeros(self.grid, np.float32), np.zeros(self.grid, np.float32)
            pred[box] = predict_box(net, sample["inputs"], roi, device, amp=device.type == "cuda")
            ref[box] = sample["dose"]
            dose_errors.append(float(np.abs(pred - ref).sum() / self.mask_counts[i]))
            dvh_errors.append(dvh_abs_errors(pred, ref, self.structures[i], self.voxel_cc[i]))
        return openkbp_scores(dose_errors, dvh_errors)


class Budget(Protocol):
    """What the learning-rate schedule reads of a training config."""

    epochs: int
    max_minutes: float | None
    lr: float
    min_lr: float


def cosine_lr(config: Budget, epochs_done: int, minutes_used: float) -> float:
    """Cosine decay from ``lr`` to ``min_lr`` over the epoch budget or the time budget, whichever ends first."""
    progress = epochs_done / config.epochs
    if config.max_minutes:
        progress = max(progress, minutes_used / config.max_minutes)
    return config.min_lr + (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2


def load_init_weights(net: torch.nn.Module, path: str | Path) -> None:
    """Start ``net`` from inference weights (a best.pt or a bundled model file) of the same architecture."""
    if not Path(path).is_file():
        raise DoseSegError(f"{path}: initial weights not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint["config"] != net.config.to_dict():
        raise DoseSegError(f"{path}: its network ({checkpoint['config']}) differs from this run's")
    net.load_state_dict(checkpoint["state_dict"])


def save_weights(path: Path, net: DoseNet, meta: dict) -> None:
    """Inference weights: state dict, architecture and metadata, loadable with weights_only=True."""
    partial = path.with_suffix(".partial")
    torch.save({"state_dict": net.state_dict(), "config": net.config.to_dict(), "meta": meta}, partial)
    partial.replace(path)


def _patient_folders(data: Path, split: str) -> list[Path]:
    folders = sorted((p for p in (data / split).iterdir() if (p / "ct.nrrd").is_file()),
                     key=lambda p: (len(p.name), p.name))
    if not folders:
        raise DoseSegError(f"{data / split}: no patient folder with ct.nrrd")
    return folders


def train_dose(data: Path, out: Path, config: TrainConfig, cache: Path | None = None,
               device: torch.device | None = None) -> dict:
    """Train (or resume) the dose network; returns the best validation scores.

    Writes into ``out``: last.pt (full state, for resume), best.pt (inference weights),
    log.csv (one row per epoch) and config.json.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    net = DoseNet(config.net)
    if config.init_weights:
        load_init_weights(net, config.init_weights)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    train_folders = _patient_folders(data, "train")[: config.max_train_patients]
    val_folders = _patient_folders(data, "validation")[: config.max_val_patients]
    cache = cache or out / "cache"
    train_files = build_cache(train_folders, cache)
    val_set = ValidationSet(build_cache(val_folders, cache), val_folders)
    train_samples = [load_cached(f) for f in train_files]

    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"epoch": 0, "best": float("inf"), "best_dvh": float("inf"), "stale": 0, "minutes": 0.0}
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
            loss = _train_epoch(net, optimizer, train_samples, config, epoch, device)
            scores = (float("nan"), float("nan"))
            if epoch % config.val_every == 0 or epoch == config.epochs:
                net.eval()
                scores = val_set.score(net, config.patch, device)
                if scores[0] < state["best"]:
                    state.update(best=scores[0], best_dvh=scores[1], stale=0)
                    save_weights(out / "best.pt", net, {"epoch": epoch, "val_dose_score": scores[0],
                                                         "val_dvh_score": scores[1], "patch": list(config.patch)})
                else:
                    state["stale"] += 1
            state["epoch"] = epoch
            state["minutes"] += (time.monotonic() - t0) / 60
            writer.writerow([epoch, f"{loss:.4f}", f"{scores[0]:.4f}", f"{scores[1]:.4f}",
                             f"{lr:.3g}", f"{time.monotonic() - t0:.1f}"])
            log_file.flush()
            save_last(last, net, optimizer, state)
            if config.max_minutes and state["minutes"] > config.max_minutes:
                log.warning("time limit of %.0f min reached after epoch %d", config.max_minutes, epoch)
                break
    return {"val_dose_score": state["best"], "val_dvh_score": state["best_dvh"], "epochs": state["epoch"]}


def _train_epoch(net: DoseNet, optimizer: torch.optim.Optimizer, samples: list[dict], config: TrainConfig,
                 epoch: int, device: torch.device) -> float:
    """One pass over the training patients in random order; returns the mean loss."""
    net.train()
    rng = np.random.default_rng([config.seed, epoch])
    augment = DoseAugmentation(config.augment, seed=config.seed * 1000 + epoch)
    order = rng.permutation(len(samples))
    batches = [order[i: i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    losses = []
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
    for batch in bar:
        patches = [augment(to_device(random_patch(samples[i], config.patch, rng), device)) for i in batch]
        ct, rest, dose = (torch.stack([p[key] for p in patches]) for key in ("ct", "rest", "dose"))
        with autocast(device):
            pred = net(torch.cat([ct, rest], dim=1)).float()
        loss = masked_mae(pred, dose, rest, config.structure_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses):.3f}")
    return float(np.mean(losses))
