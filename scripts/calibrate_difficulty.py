"""Calibrate the case-adaptive DVH-metric intervals of a catalogue dose model (difficulty model, cross-fitted).

    PYTHONPATH=$PWD python scripts/calibrate_difficulty.py --data ../shared/data/openkbp/validation \
        --cache /tmp/difficulty [--predictions PRED] [--model NAME] [--folds 5] [--write]

For each validation patient: the dose as ``doseseg run`` gives it (the model's prediction normalised to
the prescription; ``--predictions PRED/<patient>/dose.nrrd`` when computed before), its interval metrics
with their difficulty features, and the plan's values (cached in ``--cache``). Prints the held-out
coverage, widths and rank correlations (each fold calibrated on the others); with ``--write`` adds the
calibration to ``Resources/Models/<model>.uncertainty.json`` (``difficulty``). Never run it on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from DoseSegLib.analysis.difficulty import Item, Observation, calibrate_difficulty, case_items, held_out_report
from DoseSegLib.analysis.normalisation import Convention, normalise_dose
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.alignment import align_case, resample
from DoseSegLib.io.patient import read_dose, read_patient
from DoseSegLib.models.common.catalogue import models_dir
from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose
from DoseSegLib.models.dose.uncertainty import calibration_path


def collect(model, folder: Path, predictions: Path | None, cache: Path) -> list[dict]:
    """The patient's interval metrics, features and plan values (cached)."""
    path = cache / f"{folder.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    case = align_case(read_patient(folder))
    if predictions is not None:
        dose = resample(read_dose(predictions / folder.name / "dose.nrrd"), case.ct, "linear", 0.0)
    else:
        convention = Convention.load(models_dir() / f"{model.entry.name}.prescription.json", model.entry.sha256)
        dose, _ = normalise_dose(predict_case_dose(model, case), case, convention)
    predicted = evaluate_plan(replace(case, dose=dose), constraints=[])
    reference = {r["structure"]: r for r in evaluate_plan(case, constraints=[]).metrics}
    records = [{"item": asdict(item), "reference": float(reference[item.structure][item.metric])}
               for item in case_items(case, predicted.metrics)]
    path.write_text(json.dumps(records))
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the validation split's patient folders")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, help="PRED/<patient>/dose.nrrd: doses as doseseg run gives them")
    parser.add_argument("--model", help="catalogue dose model (default: the default one)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if "test" in args.data.name:
        sys.exit("refusing to calibrate on the test split")
    model = load_dose_model(args.model, "cpu")
    args.cache.mkdir(parents=True, exist_ok=True)
    observations = []
    for folder in sorted(p for p in args.data.iterdir() if (p / "ct.nrrd").is_file()):
        for record in collect(model, folder, args.predictions, args.cache):
            item = Item(**{**record["item"], "features": tuple(record["item"]["features"])})
            observations.append(Observation(folder.name, item, record["reference"]))
    report = held_out_report(observations, args.level, args.folds)
    print(json.dumps(report, indent=1))
    if args.write:
        path = calibration_path(model)
        sidecar = json.loads(path.read_text())
        sidecar["difficulty"] = {**calibrate_difficulty(observations, args.folds).to_dict(), "held_out": report,
                                 "data": f"{args.data.name} split, dose as doseseg run gives it (normalised)"}
        path.write_text(json.dumps(sidecar, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
