"""``doseseg publish-model``: a training run's best.pt as a named user model with a card written from the run.

The card says what a physicist must know before using the model: the cohort (studies,
usable, excluded, split; from the cohort's site.json recorded in the run's config.json), the
site's organs and prescription levels, the training command, hardware and time, the
validation scores of the kept epoch, and what was not done (calibrations).
"""

from __future__ import annotations

import csv
import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

from DoseSegLib.core.version import __version__
from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.listing import patient_folders
from DoseSegLib.models.common.catalogue import ModelEntry, load_catalogue, load_checkpoint, read_catalogue
from DoseSegLib.models.common.publish import check_name, publish_weights, write_atomic

log = logging.getLogger(__name__)
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


def model_card(name: str, summary: RunSummary, sha256: str, calibration: str) -> str:
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
        f"- Uncertainty intervals (`--uncertainty`): {calibration}", "",
        f"sha256 of the weights: `{sha256}`", ""])


def validation_folders(summary: RunSummary, data: Path | None) -> list[Path]:
    """The validation patients of the run's cohort (``data``, else the cohort folder the run recorded)."""
    recorded = summary.site.get("folder")
    cohort = data or (Path(recorded) if recorded else None)
    if cohort is None:
        raise DoseSegError("the run recorded no cohort folder (trained before build-cohort); give --data COHORT")
    if not (cohort / "validation").is_dir():
        raise DoseSegError(f"{cohort / 'validation'} not found (the cohort moved?); give --data COHORT")
    return patient_folders(cohort / "validation")


def calibrate_published(entry: ModelEntry, summary: RunSummary, data: Path | None) -> str:
    """Write ``<name>.uncertainty.json`` beside a published dose model when its validation split allows it;
    returns what the card says about it."""
    from DoseSegLib.models.dose.predict import load_dose_model
    from DoseSegLib.run.calibration import MIN_PATIENTS, calibrate_model

    try:
        folders = validation_folders(summary, data)
        if len(folders) < MIN_PATIENTS:
            raise DoseSegError(f"{len(folders)} validation patients, at least {MIN_PATIENTS} needed")
        model = load_dose_model(device="cpu", weights=entry.file)
        written = calibrate_model(model, entry.name, entry.sha256, folders)
    except DoseSegError as exc:
        log.warning("no uncertainty calibration for '%s': %s", entry.name, exc)
        return f"not calibrated ({exc}), so `--uncertainty` is refused for this model."
    write_atomic(entry.file.parent / f"{entry.name}.uncertainty.json", json.dumps(written, indent=1) + "\n")
    pooled = written["validation"]["pooled"]
    return (f"calibrated on {len(folders)} validation patients ({written['sampling']['method']}); "
            f"leave-one-patient-out coverage of the {written['validation'].get('level', 0.9):g} intervals "
            f"{pooled['coverage']:.3f} over {pooled['n']} metrics (a small split: a rough estimate).")


def publish_run(run: Path, name: str, folder: Path, version: str = "1.0", force: bool = False,
                data: Path | None = None) -> ModelEntry:
    """Publish ``run/best.pt`` as user model ``name`` in ``folder`` with its card (and, for a dose model, its
    uncertainty calibration on the cohort's validation split when it allows one); returns its catalogue entry.

    Refuses a bundled model's name, and a name already in ``folder`` unless ``force``.

    Args:
        data: the cohort the run trained on, when it is no longer where the run recorded it.
    """
    check_name(name)
    bundled = {e.name for e in load_catalogue() if not e.user}
    if name in bundled:
        raise DoseSegError(f"'{name}' is the name of a bundled model; choose another")
    if (folder / "catalogue.json").is_file() and not force and any(e.name == name for e in read_catalogue(folder)):
        raise DoseSegError(f"{folder}: a model '{name}' is already published (use --force to replace it)")
    summary = read_run(run)
    card = f"{name}.md"
    entry = publish_weights(run / "best.pt", folder, name, summary.task, version, card,
                            site=summary.site.get("site", "head and neck (OpenKBP)"),
                            structures=summary.structures, scores=summary.scores)
    calibration = (calibrate_published(entry, summary, data) if summary.task == "dose"
                   else "segmentation models have none.")
    write_atomic(folder / card, model_card(name, summary, entry.sha256, calibration))
    return entry
