"""OAR segmentation speed and peak memory on OpenKBP validation patients (after loading the model).

Uses the catalogue's default segmentation model, or a train-seg best.pt given with --weights.

Usage: .venv/bin/python benchmarks/bench_segment.py [--patients 5] [--device auto] [--weights runs/seg/best.pt]
Target on a 2-core CPU: under 10 s per patient.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, median_seconds, peak_memory_gb, require_data

from DoseSegLib.models.seg.data import read_inputs
from DoseSegLib.models.seg.predict import load_segmentation_model, segment_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--weights", type=Path, help="a train-seg best.pt instead of the catalogue model")
    args = parser.parse_args()
    folders = sorted((require_data() / "validation").iterdir())[: args.patients]
    start = time.perf_counter()
    model = load_segmentation_model(device=args.device, weights=args.weights)
    print(f"machine: {machine()}; device {model.device}")
    print(f"model load: {time.perf_counter() - start:.2f} s")
    inputs = [read_inputs(folder, model.inputs) for folder in folders]
    for tta in (False, True):
        times = sorted(median_seconds(lambda c=case, i=images: segment_case(model, c, i, tta=tta), 3)
                       for case, images in inputs)
        print(f"segment (tta={tta}): median {times[len(times) // 2]:.2f} s per patient over {len(times)} patients "
              f"(max {times[-1]:.2f} s; target 10 s)")
    print(f"peak memory: {peak_memory_gb():.2f} GB")


if __name__ == "__main__":
    main()
