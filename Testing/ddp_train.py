"""A tiny dose training, run in one process by the tests or in several under torchrun (same entry point).

``python -m torch.distributed.run --standalone --nproc_per_node=2 Testing/ddp_train.py DATA OUT EPOCHS REPORTS``
trains and writes ``REPORTS/rank<R>.json``: the rank, the world size and every file this
process wrote, renamed, created or removed under OUT (seen by a Python audit hook).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from DoseSegLib.models.common import distributed
from DoseSegLib.models.dose.augment import AugmentConfig
from DoseSegLib.models.dose.net import DoseNetConfig
from DoseSegLib.models.dose.training import TrainConfig, train_dose

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree", "os.symlink"}


def train(data: Path, out: Path, epochs: int) -> dict:
    """One global batch of 4 patients per epoch, no augmentation or dropout (every draw is per item)."""
    config = TrainConfig(
        epochs=epochs, batch_size=4, val_every=1, patch=(16, 16, 16), moment_weight=0.05,
        net=DoseNetConfig(channels=(4, 8, 16), strides=(2, 2), dropout=0.0),
        augment=AugmentConfig(flip_prob=0.0, affine_prob=0.0, noise_prob=0.0, blur_prob=0.0),
    )
    return train_dose(data, out, config, device=torch.device("cpu"))


def watch_writes(out: Path) -> list[str]:
    """A list that receives each path under ``out`` this process writes or changes from now on."""
    root, seen = os.path.abspath(out), []

    def under(path: object) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(path)).startswith(root)

    def hook(event: str, args: tuple) -> None:
        if event == "open" and under(args[0]):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS):
                seen.append(os.fsdecode(args[0]))
        elif event in CHANGE_EVENTS and args and under(args[0]):
            seen.append(f"{event} {os.fsdecode(args[0])}")

    sys.addaudithook(hook)
    return seen


if __name__ == "__main__":
    data_dir, out_dir, n_epochs, reports = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    writes = watch_writes(out_dir)
    train(data_dir, out_dir, n_epochs)
    report = {"rank": distributed.rank(), "world_size": distributed.world_size(), "backend": distributed.backend(),
              "writes": writes}
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"rank{report['rank']}.json").write_text(json.dumps(report))
