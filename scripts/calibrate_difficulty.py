"""Calibrate the case-adaptive DVH-metric intervals of a catalogue dose model (bias model and conformal widths).

    PYTHONPATH=$PWD python scripts/calibrate_difficulty.py --train ../shared/data/openkbp/train \
        --data ../shared/data/openkbp/validation --cache /tmp/difficulty [--model NAME] [--select] [--robustness] \
        [--write]

For each patient of both splits: the dose as ``doseseg run`` gives it (the model's prediction normalised to
the prescription; no auto-segmentation), its interval metrics with their difficulty features, and the plan's
values (cached in ``--cache``, keyed by the model and the feature names). The bias models are fitted on
``--train`` (the split the network learnt from), the widths calibrated on ``--data``. Prints the held-out
coverage, widths and rank correlations (each fold of ``--data`` calibrated on the others) and, with
``--select``, the model choice on the training split alone, with ``--robustness`` the spread of the held-out
figures; with ``--write`` adds the calibration to
``Resources/Models/<model>.uncertainty.json`` (``difficulty``). Never run it on the test split.
"""

from __future__ import annotations

import argparse
import json
import hashlib
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from DoseSegLib.analysis.difficulty import (
    DifficultyCalibration,
    FamilyModel,
    Observation,
    calibrate_difficulty,
    conformal_quantile,
    fit_models,
    folds_of,
    held_out_report,
)
from DoseSegLib.analysis.difficulty_features import FEATURE_NAMES, FEATURES_VERSION, Item, case_items
from DoseSegLib.analysis.intervals import FAMILIES
from DoseSegLib.analysis.normalisation import Convention, normalise_dose
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.common.catalogue import models_dir
from DoseSegLib.models.dose.predict import DoseModel, load_dose_model, predict_case_dose
from DoseSegLib.models.dose.uncertainty import calibration_path


def collect(model: DoseModel, folder: Path, cache: Path) -> list[dict]:
    """The patient's interval metrics, features and plan values (cached)."""
    path = cache / f"{folder.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    case = align_case(read_patient(folder))
    convention = Convention.load(models_dir() / f"{model.entry.name}.prescription.json", model.entry.sha256)
    dose, _ = normalise_dose(predict_case_dose(model, case), case, convention)
    predicted = evaluate_plan(replace(case, dose=dose), constraints=[])
    reference = {r["structure"]: r for r in evaluate_plan(case, constraints=[]).metrics}
    records = [{"item": asdict(item), "reference": float(reference[item.structure][item.metric])}
               for item in case_items(case, predicted, model.oars)]
    path.write_text(json.dumps(records))
    return records


def cache_folder(cache: Path, model: DoseModel, split: Path) -> Path:
    """``cache/<model and features key>/<split>``: a cache of another model or feature set is never read."""
    parts = (model.entry.sha256, *model.oars, f"features version {FEATURES_VERSION}", *FEATURE_NAMES)
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return cache / key[:16] / split.name


def observations(model: DoseModel, data: Path, cache: Path) -> list[Observation]:
    """Every interval metric of a split's patients, with its plan value (progress on stderr)."""
    cache.mkdir(parents=True, exist_ok=True)
    folders = sorted(p for p in data.iterdir() if (p / "ct.nrrd").is_file())
    out = []
    for number, folder in enumerate(folders, 1):
        for record in collect(model, folder, cache):
            out.append(Observation(folder.name, Item(**record["item"]), record["reference"]))
        print(f"{data.name}: {number}/{len(folders)} {folder.name}", file=sys.stderr, flush=True)
    return out


def selection(training: list[Observation], folds: int, level: float) -> dict:
    """How the shipped model was chosen, on the training split alone (its patients' own predictions, patient
    folds): the pooled width ratio to the constant interval of the bias alone and of the bias with a normalised
    conformal scale (a ridge of log(|residual| + 0.2) on the same features), and that scale's Spearman
    correlation with |residual|. Every metric gets the bias here (no constant interval for extrapolation)."""
    from scipy.stats import spearmanr

    fold = folds_of([o.patient for o in training], folds)
    out: dict = {}
    for scaled in (False, True):
        widths = constants = 0.0
        ranks = {}
        for family in FAMILIES:
            chosen = [o for o in training if o.item.family == family]
            organs = sorted({o.item.structure for o in chosen}) if family.startswith("oar") else []
            errors = np.array([o.error for o in chosen])
            bias, scale = np.zeros(len(chosen)), np.ones(len(chosen))
            for k in range(folds):
                held = np.array([fold[o.patient] == k for o in chosen])
                fit_items = [o.item for o, h in zip(chosen, held, strict=True) if not h]
                held_items = [o.item for o, h in zip(chosen, held, strict=True) if h]
                model = FamilyModel.fit(fit_items, errors[~held], organs)
                bias[held] = [model.bias(i) for i in held_items]
                if scaled:
                    residual = np.abs(errors[~held] - [model.bias(i) for i in fit_items])
                    spread = FamilyModel.fit(fit_items, np.log(residual + 0.2), organs)
                    scale[held] = np.exp([spread.bias(i) for i in held_items])
            half = conformal_quantile(list(np.abs(errors - bias) / scale), level)
            widths += 2 * half * float(scale.sum())
            constants += 2 * conformal_quantile(list(np.abs(errors)), level) * len(chosen)
            if scaled:
                ranks[family] = round(float(spearmanr(scale, np.abs(errors - bias)).statistic), 3)
        out["bias and scale" if scaled else "bias only"] = {"width_ratio": round(widths / constants, 3), **(
            {"spearman_scale_residual": ranks} if scaled else {})}
    return out


def robustness(training: list[Observation], calibration: list[Observation], level: float, folds: int) -> dict:
    """How much the held-out pooled width ratio and coverage move: over 10 random assignments of the calibration
    patients to folds, and over 200 patient bootstrap resamples (a drawn patient's copies in one fold; the bias
    models stay those fitted on the whole training split)."""
    rng = np.random.default_rng(0)
    patients = sorted({o.patient for o in calibration})
    shuffled = []
    for _ in range(10):
        order = {p: f"{i:03d}" for i, p in enumerate(rng.permutation(patients))}
        pooled = held_out_report(training, [Observation(order[o.patient], o.item, o.reference) for o in calibration],
                                 level, folds)["pooled"]
        shuffled.append((pooled["width_ratio"], pooled["coverage"]))
    models = fit_models(training)
    by_patient = {p: [o for o in calibration if o.patient == p] for p in patients}
    boot = []
    for _ in range(200):
        drawn = list(rng.choice(patients, len(patients)))
        fold = {p: i % folds for i, p in enumerate(rng.permutation(patients))}
        widths, constants, covered = [], [], []
        for k in range(folds):
            rest = [o for p in drawn if fold[p] != k for o in by_patient[p]]
            intervals = DifficultyCalibration.calibrate(models, rest)
            for o in (o for p in drawn if fold[p] == k for o in by_patient[p]):
                lower, upper = intervals.interval(o.item, level)
                widths.append(upper - lower)
                constants.append(2 * conformal_quantile(intervals.constant[o.item.family], level))
                covered.append(lower <= o.reference <= upper)
        boot.append((float(np.mean(widths) / np.mean(constants)), float(np.mean(covered))))
    a, b = np.array(shuffled), np.array(boot)
    return {"fold assignments": {"width_ratio": [round(float(a[:, 0].min()), 3), round(float(a[:, 0].max()), 3)],
                                 "coverage": [round(float(a[:, 1].min()), 3), round(float(a[:, 1].max()), 3)]},
            "patient bootstrap 95 %": {"width_ratio": np.percentile(b[:, 0], [2.5, 97.5]).round(3).tolist(),
                                       "coverage": np.percentile(b[:, 1], [2.5, 97.5]).round(3).tolist(),
                                       "P(width_ratio > 0.85)": round(float(np.mean(b[:, 0] > 0.85)), 2)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="the training split's patient folders (bias)")
    parser.add_argument("--data", type=Path, required=True, help="the validation split's patient folders (widths)")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", help="catalogue dose model (default: the default one)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--select", action="store_true",
                        help="also print the model choice on the training split (bias only vs with a scale model)")
    parser.add_argument("--robustness", action="store_true",
                        help="also print the spread of the held-out figures (fold assignments, patient bootstrap)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if "test" in args.data.name or "test" in args.train.name:
        sys.exit("refusing to calibrate on the test split")
    model = load_dose_model(args.model, "cpu")
    training = observations(model, args.train, cache_folder(args.cache, model, args.train))
    calibration = observations(model, args.data, cache_folder(args.cache, model, args.data))
    if args.select:
        print(json.dumps({"training split cross-validation": selection(training, args.folds, args.level)}, indent=1))
    if args.robustness:
        print(json.dumps({"robustness": robustness(training, calibration, args.level, args.folds)}, indent=1))
    report = held_out_report(training, calibration, args.level, args.folds)
    print(json.dumps(report, indent=1))
    if args.write:
        path = calibration_path(model)
        sidecar = json.loads(path.read_text())
        sidecar["difficulty"] = {**calibrate_difficulty(training, calibration).to_dict(), "held_out": report,
                                 "data": f"bias fitted on the {args.train.name} split, widths calibrated on the "
                                         f"{args.data.name} split; dose as doseseg run gives it (normalised)"}
        path.write_text(json.dumps(sidecar, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
