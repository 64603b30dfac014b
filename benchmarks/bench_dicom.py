"""Reading a DICOM patient: a 512x512x150 CT series with a 20-ROI RTSTRUCT (target: < 15 s, < 2 GB).

Usage: python benchmarks/bench_dicom.py [--runs 3] [--slices 150] [--rois 20]

Writes a synthetic patient (an elliptic body with 19 ellipsoid organs of 2 to 90 mm and the
body as EXTERNAL, 0.98 x 0.98 x 2.5 mm) into a temporary folder, then reads it with
``read_patient`` in a fresh process per run: wall time of the read and the process's peak
resident memory (the interpreter and its imports included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, peak_memory_gb

from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume

TESTING = Path(__file__).resolve().parents[1] / "Testing"  # the DICOM writer of the tests


def synthetic_case(slices: int, rois: int) -> Case:
    """A 512 x 512 x ``slices`` CT with an elliptic body and ``rois - 1`` ellipsoid organs."""
    spacing = (0.9765625, 0.9765625, 2.5)
    shape = (512, 512, slices)
    x, y, z = (np.arange(n, dtype=np.float32) * s - (n - 1) * s / 2 for n, s in zip(shape, spacing))
    body = (x[:, None, None] / 220) ** 2 + (y[None, :, None] / 160) ** 2 <= 1
    body = np.broadcast_to(body, shape).copy()
    ct = np.where(body, 40, -1000).astype(np.int16)
    rng = np.random.default_rng(0)
    structures = {}
    for n in range(rois - 1):
        radius = rng.uniform(1, 45, 3)
        centre = rng.uniform(-100, 100, 3) * (1, 0.8, 0.5 * slices * 2.5 / 200)
        organ = sum(((c - c0) / r) ** 2 for c, c0, r in zip(np.ix_(x, y, z), centre, radius)) <= 1
        if organ.any():
            structures[f"Organ{n:02d}"] = Volume(organ & body, spacing, (x[0], y[0], z[0]))
    grid = Volume(ct, spacing, (x[0], y[0], z[0]))
    return Case("bench", grid, structures, possible_dose_mask=grid.with_array(body))


def read_once(folder: Path) -> dict:
    from DoseSegLib.io.patient import read_patient

    start = time.perf_counter()
    case = read_patient(folder)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_gb": high_water_gb(), "structures": len(case.structures)}


def high_water_gb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return peak_memory_gb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--rois", type=int, default=20)
    parser.add_argument("--read", type=Path, help=argparse.SUPPRESS)  # child mode: one timed read
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read_once(args.read)))
        return
    sys.path.insert(0, str(TESTING))
    from dicom_helpers import write_dicom_patient

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as scratch:
        start = time.perf_counter()
        folder = write_dicom_patient(Path(scratch) / "patient", synthetic_case(args.slices, args.rois))
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1024**2
        print(f"wrote 512x512x{args.slices} CT + RTSTRUCT ({args.rois} ROIs) in {time.perf_counter() - start:.1f} s, "
              f"{size:.0f} MB")
        results = [json.loads(subprocess.run([sys.executable, __file__, "--read", str(folder)], check=True,
                                             capture_output=True, text=True).stdout) for _ in range(args.runs)]
    seconds = sorted(r["seconds"] for r in results)
    print(f"read_patient: median {seconds[len(seconds) // 2]:.2f} s (runs {', '.join(f'{s:.2f}' for s in seconds)}), "
          f"peak {max(r['peak_gb'] for r in results):.2f} GB, {results[0]['structures']} structures + body")


if __name__ == "__main__":
    main()
