"""A catalogue of tiny, randomly initialised models for the self-test's testing mode: Run all runs to the end in
seconds (its doses are random but plausible); nothing is downloaded. Needs torch."""

from __future__ import annotations

import json
from pathlib import Path

TINY_DOSE_SCALE_GY = 7.0  # an untrained network's output times 70 Gy fails the plausibility check; times 7 passes


def writeTinyCatalogue(folder: Path) -> Path:
    """A catalogue.json in ``folder`` with one tiny default dose model; point DOSESEG_MODELS at ``folder``."""
    import torch

    from DoseSegLib.models.common.catalogue import sha256_of
    from DoseSegLib.models.common.training_loop import save_weights
    from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = DoseNetConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, dose_scale_gy=TINY_DOSE_SCALE_GY)
    save_weights(folder / "tiny_dose.pt", DoseNet(config), {"patch": [32, 32, 32]})
    entry = {"name": "tiny-dose", "task": "dose", "file": "tiny_dose.pt", "sha256": sha256_of(folder / "tiny_dose.pt"),
             "version": "test", "default": True}
    (folder / "catalogue.json").write_text(json.dumps({"models": [entry]}))
    return folder
