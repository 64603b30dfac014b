"""Tiny, randomly initialised dose models for the self-test's testing mode and the pytest suites (through
Testing/model_helpers.py): Run all runs to the end in seconds (its doses are random but plausible); nothing is
downloaded. Needs torch."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from DoseSegLib.models.common.catalogue import sha256_of
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig

# Why 7 Gy: a network's raw output is multiplied by dose_scale_gy (70 Gy in trained models). An
# untrained tiny network's output at 70 Gy reaches hundreds of Gy, which check_predicted_dose
# (analysis/dosecheck.py: at most 1.3 x the highest prescription) refuses as implausible before
# anything is written; at 7 Gy its random doses stay plausible, so the commands run to the end.
TINY_DOSE_SCALE_GY = 7.0
TINY_PATCH = [32, 32, 32]


def tinyDoseConfig(**changes) -> DoseNetConfig:
    """A tiny dose network (3 levels, one residual unit) whose random doses pass the plausibility check.

    Args:
        changes: other DoseNetConfig fields (e.g. ``dropout=0.0``).
    """
    return DoseNetConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, dose_scale_gy=TINY_DOSE_SCALE_GY,
                         **changes)


def catalogueEntry(folder: Path, name: str, file: str, task: str = "dose", **fields) -> dict:
    """A catalogue row for the weights ``folder/file`` (their sha256), version "test", plus ``fields``."""
    return {"name": name, "task": task, "file": file, "sha256": sha256_of(folder / file), "version": "test", **fields}


def writeTinyCatalogue(folder: Path, extraEntries: tuple[dict, ...] = ()) -> Path:
    """A catalogue.json in ``folder`` with one tiny default dose model (plus ``extraEntries``); point
    DOSESEG_MODELS at ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_weights(folder / "tiny_dose.pt", DoseNet(tinyDoseConfig()), {"patch": TINY_PATCH})
    entry = catalogueEntry(folder, "tiny-dose", "tiny_dose.pt", default=True)
    (folder / "catalogue.json").write_text(json.dumps({"models": [entry, *extraEntries]}))
    return folder
