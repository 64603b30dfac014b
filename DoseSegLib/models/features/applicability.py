"""The applicability check of a dose model: the feature autoencoder and the anatomy descriptors of a case,
judged against the model's training patients (see ``analysis.applicability``).

Calibration (``scripts/calibrate_applicability.py``, or from Python for a user's own model)::

    sidecar = calibrate_applicability(load_dose_model(), train_folders, validation_folders)
    write_applicability(sidecar, Path("Resources/Models/openkbp-dose-unet24.applicability.json"))

At run time :func:`check_applicability` describes the aligned case with its predicted dose (the
autoencoder's dose channel) and returns the verdict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np

from DoseSegLib.analysis.applicability import (
    Applicability,
    Reference,
    conformal_threshold,
    describe_anatomy,
    fit_spreads,
    latent_model,
    leave_one_out_false_alarm,
)
from DoseSegLib.core.alignment import align_case, body_mask
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.dose.predict import DoseModel, predict_case_dose
from DoseSegLib.models.features.data import prepare_inputs
from DoseSegLib.models.features.predict import FeatureModel, load_features_model

log = logging.getLogger(__name__)
SUFFIX = ".applicability.json"
LATENT, RECONSTRUCTION = "autoencoder latent distance", "autoencoder reconstruction error"
FALSE_ALARM = 0.05
ORGAN_FALSE_ALARM = 0.02  # of a plausible organ contour set aside as implausible (its goals not evaluated)


def autoencoder_description(model: FeatureModel, case: Case, dose: Volume) -> tuple[np.ndarray, float]:
    """The latent vector of ``case`` with ``dose`` in the dose channel, and the mean squared
    reconstruction error of its CT and target channels (the dose channel left out of the error)."""
    import torch

    from DoseSegLib.models.features.net import FeatureNet

    image = prepare_inputs(replace(case, dose=dose), model.inputs)["image"]
    net = cast(FeatureNet, model.net)
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(image[None]).to(model.device)
        z = net.encode(x)
        latent, output = z[0].float().cpu().numpy(), net.decode(z)[0].float().cpu().numpy()
    kept = [i for i, name in enumerate(model.inputs.channel_names) if name != "dose"]
    return latent, float(np.mean((output[kept] - image[kept]) ** 2))


def describe_case(model: FeatureModel, case: Case, dose: Volume) -> tuple[dict[str, float], np.ndarray]:
    """The descriptors of an aligned case (anatomy and autoencoder reconstruction error) and its latent vector."""
    values = describe_anatomy(case, body_mask(case.ct))
    latent, error = autoencoder_description(model, case, dose)
    return {**values, RECONSTRUCTION: error}, latent


def applicability_path(model: DoseModel, folder: Path | None = None) -> Path | None:
    """The calibration sidecar of a catalogue dose model, beside its weights (None for a user's weights file)."""
    return None if model.entry is None else (folder or model.entry.file.parent) / f"{model.entry.name}{SUFFIX}"


def load_reference(model: DoseModel, path: Path | None = None) -> tuple[Reference, str]:
    """The model's applicability reference and its features model's name; refuses one made for other weights."""
    path = path or applicability_path(model)
    if path is None:
        raise DoseSegError("no applicability calibration for a weights file: calibrate it with "
                           "models.features.applicability.calibrate_applicability")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DoseSegError(f"{path}: no applicability calibration ({exc})") from exc
    sha = model.entry.sha256 if model.entry is not None else None
    if sha is not None and data.get("sha256") != sha:
        raise DoseSegError(f"{path}: calibrated for other weights (sha256 {str(data.get('sha256'))[:12]}...)")
    return Reference.from_dict(data["reference"]), str(data["features_model"]["name"])


def assess_case(reference: Reference, features: FeatureModel, case: Case, dose: Volume,
                auto: Sequence[str] = ()) -> Applicability:
    """The verdict on an aligned case with its predicted dose (``auto``: its auto-segmented OARs)."""
    values, latent = describe_case(features, case, dose)
    if reference.latent_mean:
        values[LATENT] = reference.latent_distance(latent)
    return reference.assess(values, case.targets, auto)


def _described(features: FeatureModel, folder: Path, dose_of: Callable[[Path, Case], Volume],
               cache: Path | None) -> dict:
    """One patient's descriptors, latent vector and target levels (from ``cache/<folder>.json`` when there)."""
    path = cache / f"{folder.name}.json" if cache is not None else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    case = align_case(read_patient(folder))
    values, latent = describe_case(features, case, dose_of(folder, case))
    record = {"values": values, "latent": latent.tolist(), "levels": list(case.targets.values())}
    if path is not None:
        path.write_text(json.dumps(record))
    log.info("applicability: described %s", folder.name)
    return record


def _plan_dose(folder: Path, case: Case) -> Volume:
    if case.dose is None:
        raise DoseSegError(f"{folder}: a training patient needs its plan dose (dose.nrrd)")
    return case.dose


def calibrate_applicability(
    dose_model: DoseModel, train: Sequence[Path], validation: Sequence[Path], false_alarm: float = FALSE_ALARM,
    features: FeatureModel | None = None, predicted: Callable[[Path, Case], Volume] | None = None,
    cache: Path | None = None,
) -> dict:
    """The applicability sidecar of ``dose_model`` (a JSON-serialisable dict; see :func:`write_applicability`).

    Args:
        train: the training patients' folders (with their plan doses): the reference distribution.
        validation: patients the model was not trained on: their scores, with the model's predicted
            dose, set the threshold at ``false_alarm`` (split-conformal).
        features: the feature autoencoder (the catalogue's default when None).
        predicted: the predicted dose of a validation folder's aligned case (the model's prediction when None,
            e.g. read from a cache).
        cache: a folder for per-patient descriptors (resumable; ``train/`` and ``validation/`` inside).
    """
    features = features or load_features_model(None, str(dose_model.device))
    subfolders = [cache / split if cache is not None else None for split in ("train", "validation")]
    for folder in subfolders:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    train_records = [_described(features, f, _plan_dose, subfolders[0]) for f in train]
    mean, precision = latent_model(np.array([r["latent"] for r in train_records]))
    levels = [gy for r in train_records for gy in r["levels"]]
    reference = Reference(fit_spreads([r["values"] for r in train_records]), (min(levels), max(levels)),
                          float("inf"), false_alarm, mean, precision)
    dose_of = predicted or (lambda _folder, case: predict_case_dose(dose_model, case))
    scores, organs = [], []
    for folder in validation:
        record = _described(features, folder, dose_of, subfolders[1])
        values = {**record["values"], LATENT: reference.latent_distance(record["latent"])}
        scores.append(reference.assess(values, {}).score)
        organs += reference.organ_scores(values)
    reference.threshold = conformal_threshold(scores, false_alarm)
    reference.organ_threshold = conformal_threshold(organs, ORGAN_FALSE_ALARM)
    entry = dose_model.entry
    return {
        "model": entry.name if entry else None, "sha256": entry.sha256 if entry else None,
        "features_model": features.entry.describe() if features.entry else {"name": None},
        "reference": reference.to_dict(),
        "validation": {"patients": len(scores), "scores": [round(s, 3) for s in scores],
                       "in_sample_false_alarm": float(np.mean([s > reference.threshold for s in scores])),
                       "leave_one_out_false_alarm": leave_one_out_false_alarm(scores, false_alarm),
                       "organ_contours": len(organs), "organ_false_alarm": ORGAN_FALSE_ALARM,
                       "organ_leave_one_out_false_alarm": leave_one_out_false_alarm(organs, ORGAN_FALSE_ALARM)},
        "data": f"{len(train)} training patients (reference), {len(validation)} validation patients (threshold)",
    }


def write_applicability(sidecar: dict, path: Path) -> None:
    path.write_text(json.dumps(sidecar, indent=1) + "\n")
