"""Time to load one patient folder and align it onto its CT grid (target: under 0.5 s).

Usage: python benchmarks/bench_load_align.py [PATIENT_FOLDER] [--runs 7]

By default it uses ../shared/data/openkbp/validation/pt_201 next to the repository;
without that folder it times a 128^3 phantom patient instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.phantom import write_phantom_patient

DEFAULT_PATIENT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "openkbp" / "validation" / "pt_201"


def time_load_align(folder: Path, runs: int) -> list[float]:
    """Seconds of each of ``runs`` read-and-align passes (after one warm-up pass)."""
    align_case(read_patient(folder))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        align_case(read_patient(folder))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patient", type=Path, nargs="?", default=DEFAULT_PATIENT)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} (1 min)")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.patient
        if not folder.is_dir():
            folder = Path(scratch) / "phantom"
            write_phantom_patient(folder, shape=(128, 128, 128), spacing=(2.0, 2.0, 1.0))
            print(f"{args.patient} not found: timing a 128^3 phantom patient instead")
        times = time_load_align(folder, args.runs)
    print(f"patient: {folder.name}")
    print(f"load + align, median of {args.runs}: {statistics.median(times):.3f} s "
          f"(min {min(times):.3f} s, max {max(times):.3f} s; target < 0.5 s)")


if __name__ == "__main__":
    main()
