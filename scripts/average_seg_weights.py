"""Average the weights of several epochs of one train-seg run and re-tune its thresholds on validation.

The thresholds are tuned on the masks as ``doseseg segment`` makes them: each organ at risk
cut to its largest connected region (a lower threshold may then win, since stray islands
no longer cost Dice). One snapshot alone re-tunes a run's best.pt that way.

Averaging the last epochs of a run (stochastic weight averaging) often segments a little
better than any one of them. The snapshots are ``last.pt`` copies (or best.pt files) of the
same run; ``--like`` is that run's best.pt, which gives the architecture, labels and inputs.
The output is a best.pt-like file (inference weights, thresholds tuned on the validation
split, its validation Dice) for ``doseseg segment --weights`` and ``scripts/publish_model.py``.

Usage: .venv/bin/python scripts/average_seg_weights.py RUN/snap/ep*.pt --like RUN/best.pt \
           --data ../shared/data/openkbp --cache RUN/cache -o averaged.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from DoseSegLib.core.case import OARS
from DoseSegLib.io.listing import patient_folders
from DoseSegLib.models.common.patient_cache import load_arrays
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.seg.data import InputSpec, build_cache
from DoseSegLib.models.seg.net import SegNet, SegNetConfig
from DoseSegLib.models.seg.training import Validator


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """The network weights of a last.pt (``model``) or a best.pt (``state_dict``), as float32."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    weights = checkpoint["model"] if "model" in checkpoint else checkpoint["state_dict"]
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def average(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point weights (others taken from the first file)."""
    states = [state_dict_of(p) for p in paths]
    return {k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
            for k, v in states[0].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshots", type=Path, nargs="+", help="last.pt copies or best.pt files of one run")
    parser.add_argument("--like", type=Path, required=True, help="the run's best.pt (architecture, labels, inputs)")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with validation/")
    parser.add_argument("--cache", type=Path, required=True, help="prepared-array cache (e.g. the run's)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    if args.output.exists():
        parser.error(f"{args.output} exists; choose a new file")
    like = torch.load(args.like, map_location="cpu", weights_only=True)
    meta = like["meta"]
    labels = tuple(meta["labels"])
    net = SegNet(SegNetConfig.from_dict(like["config"]))
    net.load_state_dict(average(args.snapshots))
    spec = InputSpec.from_dict(meta["inputs"])
    cached = build_cache(patient_folders(args.data / "validation"), args.cache, spec, labels, False)
    validator = Validator([load_arrays(f) for f in cached], tuple(meta["patch"]))
    as_segmented = [label in OARS for label in labels]  # segment_case keeps each OAR's largest region
    raw, kept = validator.counts(net, torch.device("cpu"), (None, as_segmented))
    print(f"thresholds tuned on raw masks: mean validation Dice {np.nanmean(validator.tune(raw)[1]):.4f}")
    thresholds, dice = validator.tune(kept)
    names = [p.name for p in args.snapshots]
    meta = {**meta, "thresholds": {n: float(t) for n, t in zip(labels, thresholds)},
            "val_dice": float(np.nanmean(dice)), "val_dice_per_label": {n: float(d) for n, d in zip(labels, dice)},
            "epoch": meta["epoch"] if args.snapshots == [args.like] else f"average of {', '.join(names)}",
            "thresholds_tuned_on": "largest connected region of each OAR"}
    save_weights(args.output, net, meta)
    print(f"thresholds tuned on the largest regions: mean validation Dice {meta['val_dice']:.4f}: "
          + ", ".join(f"{n} {d:.3f}" for n, d in zip(labels, dice)) + f"; wrote {args.output}")


if __name__ == "__main__":
    main()
