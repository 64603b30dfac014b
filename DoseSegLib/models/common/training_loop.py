"""What the dose, segmentation and feature trainings share.

The run options (:class:`RunConfig`), the learning-rate schedule, weight files, and the
epoch loop (:func:`run_epochs`) that writes log.csv, best.pt and last.pt, stops early and
keeps to the time budget. Each training supplies only its batch step and its validation.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.listing import patient_folders
from DoseSegLib.models.common import distributed
from DoseSegLib.models.common.net_config import StoredConfig

__all__ = ["RunConfig", "Step", "Validation", "begin", "cosine_lr", "descend", "load_init_weights", "resume",
    "run_epochs", "save_last", "save_weights", "split_folders", "start_run", "train_epoch", "write_config"
]

log = logging.getLogger(__name__)

Step = Callable[[np.ndarray, list[np.random.Generator]], dict[str, torch.Tensor]]


@dataclass
class RunConfig:
    """Options every training run has (a task's config adds its own).

    Attributes:
        epochs: most epochs; the cosine learning-rate decay spans them (or max_minutes).
        val_every: validate every N epochs (and after the last one).
        patience: validations without improvement before stopping.
        max_minutes: training-time budget summed over resumed runs: the learning-rate decay
            ends with it and training stops after the epoch that passes it.
        max_train_patients, max_val_patients: only the first N patients (quick runs).
        threads: torch CPU threads (None: torch's default).
    """

    epochs: int = 40
    batch_size: int = 2
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-5
    val_every: int = 1
    patience: int = 5
    max_minutes: float | None = None
    max_train_patients: int | None = None
    max_val_patients: int | None = None
    seed: int = 0
    threads: int | None = None


@dataclass
class Validation:
    """One validation: the score that selects best.pt, the values logged and best.pt's metadata."""

    score: float
    values: dict[str, float] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def cosine_lr(config: RunConfig, epochs_done: int, minutes_used: float) -> float:
    """Cosine decay from ``lr`` to ``min_lr`` over the epoch budget or the time budget, whichever ends first."""
    progress = epochs_done / config.epochs
    if config.max_minutes:
        progress = max(progress, minutes_used / config.max_minutes)
    return config.min_lr + (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2


def start_run(config: RunConfig, device: torch.device | None) -> torch.device:
    """Join torchrun's process group if launched by it, seed torch and set its threads; returns the device.

    The default device is CUDA when available (``cuda:LOCAL_RANK`` under torchrun).
    """
    device = distributed.setup(device)
    distributed.check_batch_size(config.batch_size)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    return device


def hardware(device: torch.device | None) -> str:
    """The device a run trains on, in words (for config.json and model cards)."""
    import os

    if device is not None and device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return f"CPU ({os.cpu_count()} cores)" if device is not None else "not recorded"


def write_config(out: Path, config: RunConfig, device: torch.device | None = None) -> None:
    """Create the run folder and write ``out/config.json``: the run's options, "world_size", "backend",
    "hardware" (of rank 0) and "command" (this process's command line).

    Only rank 0 writes (other ranks never touch the run folder).
    """
    import shlex
    import sys

    if not distributed.is_main():
        return
    out.mkdir(parents=True, exist_ok=True)
    settings = {**asdict(config), "world_size": distributed.world_size(), "backend": distributed.backend(),
                "hardware": hardware(device), "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    (out / "config.json").write_text(json.dumps(settings, indent=2))


def split_folders(data: Path, config: RunConfig) -> tuple[list[Path], list[Path]]:
    """The training and validation patient folders of ``data`` (its train/ and validation/), natural order."""
    return (patient_folders(data / "train", config.max_train_patients),
            patient_folders(data / "validation", config.max_val_patients))


def begin(out: Path, config: RunConfig, net: torch.nn.Module, device: torch.device | None = None) -> None:
    """Start ``net`` from ``config.init_weights`` when the task's config has them; write out/config.json."""
    init_weights = getattr(config, "init_weights", None)
    if init_weights:
        load_init_weights(net, init_weights)
    write_config(out, config, device)


def load_init_weights(net: torch.nn.Module, path: str | Path) -> None:
    """Start ``net`` from inference weights (a best.pt or a bundled model file) of the same architecture."""
    if not Path(path).is_file():
        raise DoseSegError(f"{path}: initial weights not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint["config"] != _config_dict(net):
        raise DoseSegError(f"{path}: its network ({checkpoint['config']}) differs from this run's")
    net.load_state_dict(checkpoint["state_dict"])


def save_weights(path: Path, net: torch.nn.Module, meta: dict) -> None:
    """Inference weights: state dict, architecture and metadata, loadable with weights_only=True."""
    partial = path.with_suffix(".partial")
    torch.save({"state_dict": net.state_dict(), "config": _config_dict(net), "meta": meta}, partial)
    partial.replace(path)


def _config_dict(net: torch.nn.Module) -> dict:
    """The architecture of one of DoseSegLib's networks (each keeps its ``StoredConfig`` as ``config``)."""
    return cast(StoredConfig, net.config).to_dict()


def resume(last: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
           device: torch.device) -> dict:
    """``state`` updated from ``last`` (network and optimizer restored too) when that file exists."""
    if not last.is_file():
        return state
    checkpoint = torch.load(last, map_location=device, weights_only=True)
    net.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    log.warning("resuming from %s at epoch %d", last, checkpoint["state"]["epoch"])
    return {**state, **checkpoint["state"]}


def save_last(last: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write the training state atomically (a partial file, then renamed)."""
    partial = last.with_suffix(".partial")
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, partial)
    partial.replace(last)


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimizer step down ``loss``; returns the loss value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_epoch(net: torch.nn.Module, optimizer: torch.optim.Optimizer, count: int, config: RunConfig, epoch: int,
                step: Step, loss_name: str = "loss") -> dict[str, float]:
    """One pass over ``count`` training items in a random order, global batches of ``config.batch_size``.

    Under torchrun each rank steps on its share of each global batch (see
    :func:`distributed.batch_positions`); the gradients are averaged across ranks.

    Args:
        step: ``(item indices, one random generator per item) -> loss terms`` of one batch;
            the term ``loss_name`` is descended. An item's generator is seeded by the seed,
            the epoch and the item's position in the epoch, whatever the world size.

    Returns:
        The epoch mean of each term (averaged over ranks), named ``train_<term>``.
    """
    net.train()
    batches = distributed.batch_positions(count, config.batch_size, config.seed, epoch)
    history = defaultdict(list)
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
               disable=not distributed.is_main())
    for pairs in bar:
        terms = step(pairs[:, 1], [np.random.default_rng([config.seed, epoch, int(p)]) for p in pairs[:, 0]])
        descend(optimizer, terms[loss_name])
        for key, value in terms.items():
            history[key].append(value.item())
        bar.set_postfix({loss_name: f"{np.mean(history[loss_name]):.4g}"})
    return distributed.average({f"train_{key}": float(np.mean(values)) for key, values in history.items()})


def _spent(config: RunConfig, minutes: float) -> bool:
    return bool(config.max_minutes) and minutes > (config.max_minutes or 0.0)


@contextmanager
def _log_rows(path: Path, columns: Sequence[str]) -> Iterator[Callable[[dict], None]]:
    """A function appending a row to log.csv (header first in a new file); a no-op except on rank 0."""
    if not distributed.is_main():
        yield lambda row: None
        return
    with path.open("a", newline="") as log_file:
        writer = csv.DictWriter(log_file, fieldnames=list(columns), restval="nan")
        if log_file.tell() == 0:
            writer.writeheader()

        def write(row: dict) -> None:
            writer.writerow(row)
            log_file.flush()

        yield write


def run_epochs(
    out: Path, net: torch.nn.Module, config: RunConfig, device: torch.device, columns: Sequence[str],
    count: int, make_step: Callable[[int], Step], validate: Callable[[int], Validation], maximize: bool = False,
    on_fresh_start: Callable[[], None] | None = None, loss_name: str = "loss",
) -> dict:
    """Train ``net`` (resuming from ``out/last.pt``) until the epochs, the patience or the time run out.

    Each epoch sets the learning rate, trains, validates when due (every ``val_every``
    epochs, after the last epoch and when the time budget is spent), saves best.pt when
    the score improves, appends a log.csv row and saves last.pt. Under torchrun every
    rank runs this loop (``validate`` must return the same score on every rank, and time
    is rank 0's); only rank 0 writes. last.pt resumes under any world size.

    Args:
        columns: log.csv columns; "epoch", "lr" and "seconds" are filled here, the others
            from the training terms (``train_<term>``) and ``validate`` (NaN when not validated).
        count: number of training items (patients or images).
        make_step: ``epoch -> step`` (see :func:`train_epoch`), made once per epoch (augmentation seeds).
        loss_name: the step's term to descend.
        validate: ``epoch -> Validation``.
        maximize: a higher score is better (Dice); else lower (errors).
        on_fresh_start: called once before the first epoch of a run that is not resumed.

    Returns:
        best (score), best_values (of that validation) and epochs (done).
    """
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state: dict[str, Any] = {"epoch": 0, "best": -math.inf if maximize else math.inf, "best_values": {}, "stale": 0,
                             "minutes": 0.0}
    last = out / "last.pt"
    state = resume(last, net, optimizer, state, device)
    if on_fresh_start is not None and state["epoch"] == 0:
        on_fresh_start()
        distributed.broadcast_parameters(net)  # every rank starts from rank 0's result
    with _log_rows(out / "log.csv", columns) as write_row:
        while state["epoch"] < config.epochs and state["stale"] < config.patience:
            epoch = state["epoch"] + 1
            t0 = time.monotonic()
            lr = cosine_lr(config, state["epoch"], state["minutes"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            values = train_epoch(net, optimizer, count, config, epoch, make_step(epoch), loss_name)
            if epoch % config.val_every == 0 or epoch == config.epochs or _spent(
                    config, state["minutes"] + distributed.agree(time.monotonic() - t0) / 60):
                net.eval()
                validation = validate(epoch)
                values = {**values, **validation.values}
                improved = validation.score > state["best"] if maximize else validation.score < state["best"]
                if improved:
                    state.update(best=validation.score, best_values=validation.values, stale=0)
                    if distributed.is_main():
                        save_weights(out / "best.pt", net, validation.meta)
                else:
                    state["stale"] += 1
            seconds = distributed.agree(time.monotonic() - t0)
            state["epoch"] = epoch
            state["minutes"] += seconds / 60
            write_row({**{k: f"{v:.6g}" for k, v in values.items()},
                       "epoch": epoch, "lr": f"{lr:.3g}", "seconds": f"{seconds:.1f}"})
            if distributed.is_main():
                save_last(last, net, optimizer, state)
            if _spent(config, state["minutes"]):
                log.warning("time limit of %.0f min reached after epoch %d", config.max_minutes, epoch)
                break
    return {"best": state["best"], "best_values": state["best_values"], "epochs": state["epoch"]}
