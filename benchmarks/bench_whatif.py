"""What-if loop speed on an OpenKBP validation patient (targets: predict after an edit <= 1.5 s,
sensitivity <= 8 s on the 2-core CPU), beside the cold ``doseseg predict-dose`` time.

Usage: .venv/bin/python benchmarks/bench_whatif.py [--patient pt_201] [--edits 10] [--sensitivity-runs 10]
       [--device cpu] [--channels-last] [--model openkbp-dose-refine24] [--no-normalise]

Each edit grows one structure by a voxel or puts it back (PTV70, LeftParotid, RightParotid, SpinalCord
in turn); the time counted is set_mask + predict (dose, DVHs, metrics, goals). On a shared machine the
figures vary with the other jobs' load: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, peak_memory_gb, require_data
from scipy import ndimage

from DoseSegLib import WhatIfSession

EDITED = ("PTV70", "LeftParotid", "RightParotid", "SpinalCord")


def cold_predict_dose(folder: Path, device: str, model: str | None) -> float:
    """Wall time of a fresh ``doseseg predict-dose`` process (imports, model load, read, predict, write)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "DoseSegLib.cli", "predict-dose", str(folder), "-o", f"{out}/o",
                        "--device", device, *(["--model", model] if model else [])], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patient", default="pt_201")
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--sensitivity-runs", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="catalogue dose model (default: the catalogue's default)")
    parser.add_argument("--channels-last", action="store_true", help="the network in channels-last-3d memory format")
    parser.add_argument("--no-normalise", action="store_true",
                        help="the network's own dose (the session normalises to the prescription by default)")
    args = parser.parse_args()
    folder = require_data() / "validation" / args.patient
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} (shared machine: other jobs running)")
    start = time.perf_counter()
    session = WhatIfSession(folder, device=args.device, model=args.model, normalise=not args.no_normalise)
    refiner = "with" if session.model.refiner is not None else "without"
    print(f"model {session.model.entry.name if session.model.entry else args.model} ({refiner} refiner)")
    print(f"session open (model load, read, align, inputs): {time.perf_counter() - start:.2f} s")
    if args.channels_last:
        import torch

        session.model.net.to(memory_format=torch.channels_last_3d)
    first = session.predict()
    print(f"normalisation: {first.normalisation.to_dict() if first.normalisation else None}")
    original = {name: session.structures[name].array for name in EDITED}
    times = []
    for edit in range(args.edits):
        name = EDITED[edit // 2 % len(EDITED)]
        mask = original[name] if edit % 2 else ndimage.binary_dilation(original[name])
        start = time.perf_counter()
        session.set_mask(name, mask)
        session.predict()
        times.append(time.perf_counter() - start)
    print(f"predict after an edit: median {statistics.median(times):.2f} s over {len(times)} edits "
          f"(min {min(times):.2f}, max {max(times):.2f}); load average {os.getloadavg()[0]:.1f}")
    times = []
    for run in range(args.sensitivity_runs):
        start = time.perf_counter()
        session.sensitivity("LeftParotid", "mean", EDITED[run % 2])
        times.append(time.perf_counter() - start)
    print(f"sensitivity (LeftParotid mean wrt PTV70 / itself): median {statistics.median(times):.2f} s over "
          f"{len(times)} runs; load average {os.getloadavg()[0]:.1f}")
    print(f"cold doseseg predict-dose: {cold_predict_dose(folder, args.device, args.model):.2f} s")
    print(f"peak memory: {peak_memory_gb():.2f} GB")


if __name__ == "__main__":
    main()
