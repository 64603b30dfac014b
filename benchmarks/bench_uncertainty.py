"""Cost of ``predict-dose --uncertainty`` per patient (bundled model, its calibrated sample count).

Times, per OpenKBP validation patient, what the command does for it: read and align, the deterministic
prediction, its DVH metrics, the stochastic samples with their DVHs, dose_std and the intervals, and
writing the outputs. Prints wall time and CPU time (all threads): on a shared machine the wall time
grows with the other jobs' load, the CPU time much less.

Usage: .venv/bin/python benchmarks/bench_uncertainty.py [--patients 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import machine, peak_memory_gb, require_data

from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient, write_dose
from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose
from DoseSegLib.models.dose.uncertainty import load_calibration, predict_dose_uncertainty, write_uncertainty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    folders = sorted((require_data() / "validation").iterdir())[: args.patients]
    model = load_dose_model(device=args.device)
    _, sampling = load_calibration(model)
    print(f"machine: {machine()}; device {model.device}; load average {os.getloadavg()[0]:.1f}")
    print(f"sampling: {sampling}")
    walls, cpus = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in folders:
            wall, cpu = time.perf_counter(), time.process_time()
            case = align_case(read_patient(folder))
            dose = predict_case_dose(model, case)
            uncertainty = predict_dose_uncertainty(model, case, dose)
            out = Path(tmp) / folder.name
            out.mkdir()
            write_dose(out / "dose.nrrd", dose)
            write_uncertainty(out, uncertainty)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            print(f"{folder.name}: {walls[-1]:.2f} s wall, {cpus[-1]:.2f} s CPU", flush=True)
    print(f"per patient: median {sorted(walls)[len(walls) // 2]:.2f} s wall (max {max(walls):.2f}), "
          f"median {sorted(cpus)[len(cpus) // 2]:.2f} s CPU; load average {os.getloadavg()[0]:.1f}")
    print(f"peak memory: {peak_memory_gb():.2f} GB")


if __name__ == "__main__":
    main()
