"""``doseseg publish-model``: a training run's best.pt as a named user model with a card written from the run.

The card says what a physicist must know before using the model: the cohort (studies,
usable, excluded, split; from the cohort's site.json recorded in the run's config.json), the
site's organs and prescription levels, the training command, hardware and time, the
validation scores of the kept epoch, and what was not done (calibrations).
"""

from __future__ import annotations

import csv
import json
import platform
from dataclasses import dataclass
from pathlib import Path

from DoseSegLib.core.version import __version__
from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common.catalogue import ModelEntry, entry_of, load_catalogue, load_checkpoint, read_catalogue
from DoseSegLib.models.common.publish import (
    catalogue_row,
    check_catalogue,
    check_name,
    commit,
    copy_weights,
    staging,
    write_atomic,
)

PUBLISHED_TASKS = ("dose", "segmentation")


@dataclass
class RunSummary:
    """What a training run folder says about itself."""

    task: str
    meta: dict
    config: dict
    epochs: int
    seconds: float

    @property
    def site(self) -> dict:
        return self.config.get("site") or {}

    @property
    def structures(self) -> list[str]:
        """The organs (and target levels) the model takes or gives."""
        if self.task == "segmentation":
            return list(self.meta.get("labels", ()))
        levels = self.site.get("target_levels", ()) if self.site else (56.0, 63.0, 70.0)
        return [*self.meta.get("oars", OARS), *(f"PTV{level:g}" for level in levels)]

    @property
    def scores(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.meta.items() if k.startswith("val_") and _number(v)}


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and value == value  # not NaN


def run_task(checkpoint: dict) -> str:
    """The task of a best.pt: segmentation (labels), a dose refiner (refused), dose, or features."""
    if "labels" in checkpoint["meta"]:
        return "segmentation"
    if "correction_gy" in checkpoint["config"]:
        return "refiner"
    return "dose" if "dose_scale_gy" in checkpoint["config"] else "features"


def read_run(run: Path) -> RunSummary:
    """best.pt's metadata (weights_only), config.json and log.csv of a run folder."""
    weights = run / "best.pt"
    if not weights.is_file():
        raise DoseSegError(f"{run}: no best.pt (a train-dose or train-seg run folder holds one after validation)")
    checkpoint, _ = load_checkpoint("dose", weights=weights)
    task = run_task(checkpoint)
    if task not in PUBLISHED_TASKS:
        raise DoseSegError(f"{weights}: a {task} run; publish-model publishes dose and segmentation runs")
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise DoseSegError(f"{run}: no readable config.json ({exc})") from exc
    epochs, seconds = 0, 0.0
    if (run / "log.csv").is_file():
        with (run / "log.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                epochs += 1
                seconds += float(row.get("seconds") or 0)
    return RunSummary(task, dict(checkpoint["meta"]), config, epochs, seconds)


def _cohort_lines(site: dict) -> list[str]:
    if not site:
        return ["- Data: no site.json in the training data (OpenKBP layout): head-and-neck organs of OpenKBP."]
    cohort = site.get("cohort", {})
    lines = [f"- Site: {site.get('site', '?')}; organs (input channels, in order): {', '.join(site.get('oars', []))}",
             f"- Prescription levels in the cohort (Gy): {', '.join(f'{v:g}' for v in site.get('target_levels', []))}"]
    if cohort:
        lines.append(f"- Cohort (`doseseg build-cohort`): {cohort.get('studies', '?')} studies, "
                     f"{cohort.get('usable', '?')} usable, {cohort.get('excluded', '?')} excluded "
                     "(their reasons in the cohort's cohort.csv); split "
                     f"{cohort.get('train', '?')} train / {cohort.get('validation', '?')} validation "
                     f"(seed {cohort.get('seed', '?')}); resampled to the working grid: "
                     f"{'yes' if cohort.get('resampled') else 'no'}")
    return lines


def model_card(name: str, summary: RunSummary, sha256: str, calibrations: dict[str, str]) -> str:
    """The markdown card of a published run."""
    config = summary.config
    scores = ", ".join(f"{k} {v:g}" for k, v in summary.scores.items()) or "none recorded"
    hardware = config.get("hardware") or "not recorded"
    return "\n".join([
        f"# {name}", "",
        f"A clinic's own {summary.task} model, published with DoseSeg {__version__} by `doseseg publish-model` "
        "from a training run. Research use only: not a medical device.", "",
        "## Data", *_cohort_lines(summary.site), "",
        "## Training",
        f"- Command: `{config.get('command') or 'not recorded'}`",
        f"- Hardware: {hardware}; processes (torchrun world size) {config.get('world_size', '?')}, "
        f"backend {config.get('backend', '?')}",
        f"- Epochs run: {summary.epochs}; training time {summary.seconds / 60:.1f} min (log.csv); "
        f"kept epoch {summary.meta.get('epoch', '?')}",
        f"- Published on: {platform.system()} {platform.machine()}", "",
        "## Validation (the cohort's validation split, kept epoch)", f"- {scores}", "",
        "## Before using it",
        "- Read the cohort's names.csv (every ROI name and what it became) and cohort.csv (the excluded "
        "studies and why): a wrong name mapping trains a wrong model.",
        "- Compare the validation scores with the bundled model's card and with your planners' own spread.",
        "", "## Calibrations (from the cohort; each written beside the weights when the cohort allows it)",
        *(f"- {kind}: {note}" for kind, note in calibrations.items()), "",
        f"sha256 of the weights: `{sha256}`", ""])


def cohort_folder(summary: RunSummary, data: Path | None) -> Path:
    """The cohort the run trained on: ``data``, else the folder the run recorded."""
    recorded = summary.site.get("folder")
    cohort = data or (Path(recorded) if recorded else None)
    if cohort is None:
        raise DoseSegError("the run recorded no cohort folder (trained without a site.json); give --data COHORT")
    if not (cohort / "validation").is_dir():
        raise DoseSegError(f"{cohort / 'validation'} not found (the cohort moved?); give --data COHORT")
    return cohort


def calibrations(entry: ModelEntry, summary: RunSummary, data: Path | None, calibrate: bool) -> dict[str, str]:
    """Calibrate a published dose model on its cohort (see ``run.calibration``); the card's notes."""
    if summary.task != "dose":
        return {"uncertainty intervals": "none for a segmentation model."}
    if not calibrate:
        return {"all": "skipped (--no-calibration): --uncertainty and the applicability check are refused."}
    from DoseSegLib.run.calibration import calibrate_published

    try:
        return calibrate_published(entry, cohort_folder(summary, data))
    except DoseSegError as exc:
        return {"all": f"not calibrated ({exc}): --uncertainty and the applicability check are refused."}


def publish_run(run: Path, name: str, folder: Path, version: str = "1.0", force: bool = False,
                data: Path | None = None, calibrate: bool = True) -> ModelEntry:
    """Publish ``run/best.pt`` as user model ``name`` in ``folder`` with its card (and, for a dose model, its
    calibrations on its cohort when it allows them, see ``run.calibration``); returns its catalogue entry.

    Refuses a bundled model's name, and a name already in ``folder`` unless ``force``. Weights, calibrations
    and card are written in a staging folder and moved in before the catalogue entry, which comes last: an
    interrupted publish leaves ``folder`` as it was.

    Args:
        data: the cohort the run trained on, when it is no longer where the run recorded it.
        calibrate: False skips the calibrations (a dose model then refuses --uncertainty).
    """
    check_name(name)
    bundled = {e.name for e in load_catalogue() if not e.user}
    if name in bundled:
        raise DoseSegError(f"'{name}' is the name of a bundled model; choose another")
    if (folder / "catalogue.json").is_file() and not force and any(e.name == name for e in read_catalogue(folder)):
        raise DoseSegError(f"{folder}: a model '{name}' is already published (use --force to replace it)")
    check_catalogue(folder)
    summary = read_run(run)
    card = f"{name}.md"
    with staging(folder, name) as staged:
        copy_weights(run / "best.pt", staged / f"{name}.pt")
        row = catalogue_row(staged / f"{name}.pt", name, summary.task, version, card,
                            site=summary.site.get("site", "head and neck (OpenKBP)"),
                            structures=summary.structures, scores=summary.scores)
        notes = calibrations(entry_of(row, staged), summary, data, calibrate)  # sidecars beside the staged weights
        write_atomic(staged / card, model_card(name, summary, row["sha256"], notes))
        return commit(staged, folder, row)
