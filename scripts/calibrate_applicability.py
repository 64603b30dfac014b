"""Calibrate the applicability check of a catalogue dose model; write ``<model>.applicability.json``.

    PYTHONPATH=$PWD python scripts/calibrate_applicability.py --train ../shared/data/openkbp/train \
        --validation ../shared/data/openkbp/validation --cache /tmp/applicability \
        [--predictions PRED] [--model NAME] [--false-alarm 0.05] [--write]

The training patients (plan doses) give the reference distribution of the descriptors; the validation
patients, with the model's predicted dose (``--predictions PRED/<patient>/dose.nrrd`` when given, else
predicted here), set the threshold (see ``models.features.applicability``). Never run it on the test split.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from DoseSegLib.core.alignment import resample
from DoseSegLib.io.patient import read_dose
from DoseSegLib.models.dose.predict import load_dose_model
from DoseSegLib.models.features.applicability import applicability_path, calibrate_applicability, write_applicability


def _folders(split: Path) -> list[Path]:
    if "test" in split.name:
        sys.exit("refusing to calibrate on the test split")
    return sorted(p for p in split.iterdir() if (p / "ct.nrrd").is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--validation", type=Path, required=True)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--predictions", type=Path, help="folder of <patient>/dose.nrrd predicted by the model")
    parser.add_argument("--model", help="catalogue dose model (default: the default one)")
    parser.add_argument("--false-alarm", type=float, default=0.05)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    model = load_dose_model(args.model, "cpu")
    predicted = None
    if args.predictions:
        def predicted(folder, case):
            return resample(read_dose(args.predictions / folder.name / "dose.nrrd"), case.ct, "linear", 0.0)
    sidecar = calibrate_applicability(model, _folders(args.train), _folders(args.validation), args.false_alarm,
                                      predicted=predicted, cache=args.cache)
    print(json.dumps({k: sidecar[k] for k in ("validation", "data")}, indent=1))
    print("threshold", sidecar["reference"]["threshold"])
    if args.write:
        path = applicability_path(model)
        write_applicability(sidecar, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
