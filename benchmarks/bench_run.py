"""Wall time of the main job as a user runs it: ``doseseg run`` on one OpenKBP patient and ``doseseg demo``.

Each run is a fresh process (imports and model loading included). Uses the bundled
catalogue, or the one $DOSESEG_MODELS points to.

Usage: .venv/bin/python benchmarks/bench_run.py [--patient validation/pt_201] [--runs 3] [--device auto]
Targets on a 2-core CPU: run under 20 s, demo under 60 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, machine

DOSESEG = Path(sys.executable).parent / "doseseg"


def wall_seconds(*args: str) -> float:
    """Wall time of one ``doseseg`` command writing into a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([str(DOSESEG), *args, "-o", str(Path(tmp) / "out")], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patient", default="validation/pt_201", help="patient folder under the OpenKBP data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    patient = DATA / args.patient
    if patient.is_dir():
        times = [wall_seconds("run", str(patient), "--device", args.device) for _ in range(args.runs)]
        print(f"doseseg run {args.patient}: median {statistics.median(times):.1f} s over {args.runs} runs "
              f"(target 20 s; runs {', '.join(f'{t:.1f}' for t in times)})")
    else:
        print(f"doseseg run: skipped, no patient at {patient}")
    times = [wall_seconds("demo", "--device", args.device) for _ in range(args.runs)]
    print(f"doseseg demo: median {statistics.median(times):.1f} s over {args.runs} runs "
          f"(target 60 s; runs {', '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
