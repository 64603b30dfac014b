"""Calibrate the case-adaptive DVH-metric intervals of a catalogue dose model (bias model and conformal widths).

    PYTHONPATH=$PWD python scripts/calibrate_difficulty.py --train ../shared/data/openkbp/train \
        --data ../shared/data/openkbp/validation --cache /tmp/difficulty [--model NAME] [--folds 5] [--write]

For each patient of both splits: the dose as ``doseseg run`` gives it (the model's prediction normalised to
the prescription), its interval metrics with their difficulty features, and the plan's values (cached in
``--cache/<split>``). The bias models are fitted on ``--train`` (the split the network learnt from), the
widths calibrated on ``--data``. Prints the held-out coverage, widths and rank correlations (each fold of
``--data`` calibrated on the others); with ``--write`` adds the calibration to
``Resources/Models/<model>.uncertainty.json`` (``difficulty``). Never run it on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from DoseSegLib.analysis.difficulty import Observation, calibrate_difficulty, held_out_report
from DoseSegLib.analysis.difficulty_features import Item, case_items
from DoseSegLib.analysis.normalisation import Convention, normalise_dose
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.common.catalogue import models_dir
from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose
from DoseSegLib.models.dose.uncertainty import calibration_path


def collect(model, folder: Path, cache: Path) -> list[dict]:
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
               for item in case_items(case, predicted)]
    path.write_text(json.dumps(records))
    return records


def observations(model, data: Path, cache: Path) -> list[Observation]:
    """Every interval metric of a split's patients, with its plan value (progress on stderr)."""
    cache.mkdir(parents=True, exist_ok=True)
    folders = sorted(p for p in data.iterdir() if (p / "ct.nrrd").is_file())
    out = []
    for number, folder in enumerate(folders, 1):
        for record in collect(model, folder, cache):
            out.append(Observation(folder.name, Item(**record["item"]), record["reference"]))
        print(f"{data.name}: {number}/{len(folders)} {folder.name}", file=sys.stderr, flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="the training split's patient folders (bias)")
    parser.add_argument("--data", type=Path, required=True, help="the validation split's patient folders (widths)")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", help="catalogue dose model (default: the default one)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if "test" in args.data.name or "test" in args.train.name:
        sys.exit("refusing to calibrate on the test split")
    model = load_dose_model(args.model, "cpu")
    training = observations(model, args.train, args.cache / args.train.name)
    calibration = observations(model, args.data, args.cache / args.data.name)
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
