"""Command-line option types and the options every training command shares."""

from __future__ import annotations

import argparse
from dataclasses import fields


def name_list(text: str) -> tuple[str, ...]:
    """``a,b,c`` -> ("a", "b", "c"); at least one name."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def hu_windows(text: str) -> tuple[tuple[float, float], ...]:
    """``-1024:1024,-160:240`` -> ((-1024, 1024), (-160, 240)); each window low < high."""
    try:
        windows = tuple(tuple(float(v) for v in w.split(":")) for w in text.split(","))
    except ValueError:
        windows = ()
    if not windows or any(len(w) != 2 or w[0] >= w[1] for w in windows):
        raise argparse.ArgumentTypeError("expected LOW:HIGH[,LOW:HIGH...] in HU, e.g. -1024:1024,-160:240")
    return windows


def probability(text: str) -> float:
    """A share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def add_training_run_options(p: argparse.ArgumentParser, epochs: int, batch_size: int, val_every: int,
                             patience: int, workers: bool = False) -> None:
    """Options every training command shares (see ``models.training_loop.RunConfig``), with its defaults."""
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--val-every", type=int, default=val_every, help="validate every N epochs")
    p.add_argument("--patience", type=int, default=patience, help="validations without improvement before stopping")
    p.add_argument("--max-minutes", type=float,
                   help="training-time budget in minutes, summed over resumed runs: the cosine LR decay ends with it "
                        "and training stops after the epoch that passes it (that epoch is validated)")
    p.add_argument("--max-train-patients", type=int, help="only the first N training patients (quick runs)")
    p.add_argument("--max-val-patients", type=int, help="only the first N validation patients")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    if workers:
        p.add_argument("--workers", type=int, default=2, help="processes preparing the cache")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def run_options(args: argparse.Namespace) -> dict:
    """The ``RunConfig`` fields set by :func:`add_training_run_options`, from parsed ``args``."""
    from DoseSegLib.models.common.training_loop import RunConfig

    return {f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)}


def level_fraction(text: str) -> float:
    """An interval level strictly between 0 and 1."""
    value = probability(text)
    if value in (0.0, 1.0):
        raise argparse.ArgumentTypeError(f"expected a level strictly between 0 and 1, got {text!r}")
    return value


def add_uncertainty_options(p: argparse.ArgumentParser) -> None:
    """--uncertainty and --level (calibrated DVH intervals, dose_std.nrrd)."""
    p.add_argument("--uncertainty", action="store_true",
                   help="also write dose_std.nrrd and dvh_intervals.csv (calibrated intervals of the DVH metrics)")
    p.add_argument("--level", type=level_fraction, default=0.9, help="coverage of the intervals (default 0.9)")
