"""Dose inference speed and peak memory on OpenKBP validation patients (bundled model).

Usage: .venv/bin/python benchmarks/bench_dose.py [--patients 5] [--device auto] [--model NAME | --weights BEST.pt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, median_seconds, peak_memory_gb, require_data

from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="catalogue model (default: the default dose model)")
    parser.add_argument("--weights", type=Path, help="a train-dose or train-dose-refiner best.pt")
    args = parser.parse_args()
    folders = sorted((require_data() / "validation").iterdir())[: args.patients]
    start = time.perf_counter()
    model = load_dose_model(args.model, args.device, args.weights)
    print(f"machine: {machine()}; device {model.device}; refiner {model.refiner is not None}")
    print(f"model load: {time.perf_counter() - start:.2f} s")
    cases = [align_case(read_patient(folder)) for folder in folders]
    for tta in (False, True):
        times = [median_seconds(lambda c=case, t=tta: predict_case_dose(model, c, tta=t), 3) for case in cases]
        times.sort()
        print(f"predict (tta={tta}): median {times[len(times) // 2]:.2f} s per patient "
              f"over {len(cases)} patients (max {times[-1]:.2f} s)")
    print(f"peak memory: {peak_memory_gb():.2f} GB")


if __name__ == "__main__":
    main()
