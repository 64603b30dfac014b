"""Command-line option types and the options shared by several commands, each defined once."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from DoseSegLib.core.checks import named_path
from DoseSegLib.core.options import Device


def add_output(parser: argparse.ArgumentParser, help: str = "output folder (must be new or empty)") -> None:
    """``-o/--output`` and ``--force``."""
    parser.add_argument("-o", "--output", type=Path, required=True, help=help)
    parser.add_argument("--force", action="store_true",
                        help="replace an output folder that holds DoseSeg results (never other files)")


def prescription(text: str) -> tuple[str, float]:
    """``NAME=GY`` (``--prescription``)."""
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.core.names import parse_prescription

    try:
        return parse_prescription(text)
    except DoseSegError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_names(parser: argparse.ArgumentParser) -> None:
    """``--names`` (extra structure-name aliases) and ``--prescription`` (target doses): how to read a patient."""
    parser.add_argument("--names", type=Path, help='JSON {"alias": "CanonicalName"} added to the default aliases')
    parser.add_argument("--prescription", type=prescription, action="append", default=[], metavar="NAME=GY",
                        help="dose of a target in Gy, e.g. PTV_High=70 (repeatable; overrides a dose in the name or "
                             "the RTPLAN; giving every target's dose lets a study with an unusable RTPLAN run)")


def patient_path(text: str) -> Path:
    """A patient folder argument; ``.`` or ``..`` made absolute, since the folder's name names the patient."""
    return named_path(Path(text))


def add_patient(parser: argparse.ArgumentParser,
                help: str = "patient folder (ct.nrrd, structures/ or a .seg.nrrd, dose.nrrd)") -> None:
    """One patient folder, ``--segmentation`` to use instead of its structures/, ``--series`` (a DICOM folder's CT
    series) and ``--names``/``--prescription``."""
    parser.add_argument("patient", type=patient_path, help=help)
    parser.add_argument("--segmentation", type=Path, help="a .seg.nrrd or an RTSTRUCT to use instead of structures/")
    parser.add_argument("--series", help="DICOM patient: the CT SeriesInstanceUID, when the folder holds several")
    add_names(parser)


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the models run."""
    parser.add_argument("--device", default=Device.AUTO.value, choices=Device.choices(),
                        help="where the models run (default auto)")


def add_any_site(parser: argparse.ArgumentParser) -> None:
    """``--any-site``: run the head-and-neck models on a patient of another site (recorded in the outputs)."""
    parser.add_argument("--any-site", action="store_true",
                        help="run the models on a patient without head-and-neck organs (recorded in the outputs)")


def add_model_options(parser: argparse.ArgumentParser, model: str, weights: str, *, names: bool = True,
                      any_site: bool = True) -> None:
    """The options of a command that runs a trained model on patients, each defined once.

    ``--names``/``--prescription`` (how to read the patients), ``--device``, ``--model``, ``--weights``
    and ``--any-site``.

    Args:
        model: the default model, named in ``--model``'s help (e.g. "the default segmentation model").
        weights: the command whose best.pt ``--weights`` takes (e.g. "train-seg").
        names: False leaves out ``--names``/``--prescription`` (a command that reads no structures).
        any_site: False leaves out ``--any-site`` (a command without the head-and-neck site check).
    """
    if names:
        add_names(parser)
    add_device(parser)
    parser.add_argument("--model", help=f"catalogue model name (default: {model})")
    parser.add_argument("--weights", type=Path, help=f"a {weights} best.pt instead of a catalogue model")
    if any_site:
        add_any_site(parser)


def name_mapper(args: argparse.Namespace):
    """The structure-name mapper of ``--names`` and ``--prescription`` (the default aliases without them)."""
    from DoseSegLib.core.names import NameMapper

    prescriptions = dict(getattr(args, "prescription", None) or [])
    if getattr(args, "names", None):
        return NameMapper.from_json(args.names, prescriptions)
    return NameMapper(prescriptions=prescriptions)


def name_list(text: str) -> tuple[str, ...]:
    """``a,b,c`` -> ("a", "b", "c"); at least one name."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return names


def hu_windows(text: str) -> tuple[tuple[float, float], ...]:
    """``-1024:1024,-160:240`` -> ((-1024, 1024), (-160, 240)); each window low < high."""
    try:
        values = tuple(tuple(float(v) for v in w.split(":")) for w in text.split(","))
    except ValueError:
        values = ()
    if not values or any(len(w) != 2 or w[0] >= w[1] for w in values):
        raise argparse.ArgumentTypeError("expected LOW:HIGH[,LOW:HIGH...] in HU, e.g. -1024:1024,-160:240")
    return tuple((low, high) for low, high in values)


STEP_GY = (0.001, 5.0)
MAX_DVH_BINS = 1_000_000


def dose_step(text: str) -> float:
    """A DVH bin width in Gy, finite, from 0.001 to 5 Gy."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not STEP_GY[0] <= value <= STEP_GY[1]:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a bin width from {STEP_GY[0]:g} to {STEP_GY[1]:g} Gy, got {text!r}")
    return value


def probability(text: str) -> float:
    """A share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


CONFIG_DEFAULT: dict[str, Any] = {"default": argparse.SUPPRESS}
"""Keyword arguments of an option whose default is a config dataclass field: left out when not given."""


def given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` that were given (those added with :data:`CONFIG_DEFAULT` may be absent).

    The commands build their config dataclasses from these, so each default is stated once, in
    the dataclass, and parsing the arguments never imports the model code (torch).
    """
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def net_widths(args: argparse.Namespace) -> dict:
    """``--channels`` as a U-Net config's ``channels`` and stride-2 ``strides``; empty when not given."""
    if not hasattr(args, "channels"):
        return {}
    return {"channels": tuple(args.channels), "strides": (2,) * (len(args.channels) - 1)}


def training_patch(args: argparse.Namespace) -> dict:
    """``--patch`` as a config's ``patch`` tuple; empty when not given."""
    return {"patch": tuple(args.patch)} if hasattr(args, "patch") else {}


def add_training_run_options(p: argparse.ArgumentParser, config: str, workers: bool = False) -> None:
    """Options every training command shares (``models.common.training_loop.RunConfig``).

    Their defaults are not restated here: an option not given is left out of the parsed
    arguments (``argparse.SUPPRESS``), so the task's config dataclass default applies.

    Args:
        config: the task's config class, named in the help (e.g. ``TrainConfig``).
    """
    default = f"(default: {config}'s)"
    kept = CONFIG_DEFAULT
    p.add_argument("--epochs", type=int, help=f"most epochs {default}", **kept)
    p.add_argument("--batch-size", type=int, help=f"patients per batch {default}", **kept)
    p.add_argument("--lr", type=float, help=f"initial learning rate, cosine decay {default}", **kept)
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay {default}", **kept)
    p.add_argument("--val-every", type=int, help=f"validate every N epochs {default}", **kept)
    p.add_argument("--patience", type=int, help=f"validations without improvement before stopping {default}",
                   **kept)
    p.add_argument("--max-minutes", type=float,
                   help="training-time budget in minutes, summed over resumed runs: the cosine LR decay ends with it "
                        "and training stops after the epoch that passes it (that epoch is validated)")
    p.add_argument("--max-train-patients", type=int, help="only the first N training patients (quick runs)")
    p.add_argument("--max-val-patients", type=int, help="only the first N validation patients")
    p.add_argument("--seed", type=int, help=f"random seed {default}", **kept)
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    if workers:
        p.add_argument("--workers", type=int, help=f"processes preparing the cache {default}", **kept)
    add_device(p)


def run_options(args: argparse.Namespace) -> dict:
    """The config fields given through :func:`add_training_run_options` (``RunConfig``'s and ``workers``)."""
    from DoseSegLib.models.common.training_loop import RunConfig

    names = [f.name for f in fields(RunConfig)] + ["workers"]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


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


def add_normalise_option(p: argparse.ArgumentParser) -> None:
    """--no-normalise (the predicted dose as the network gives it)."""
    p.add_argument("--no-normalise", action="store_true",
                   help="leave the predicted dose as the network gives it (default: scaled so that the primary "
                        "target meets its prescription by the convention of the model's training plans)")
