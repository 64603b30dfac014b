"""DoseSeg's DVH against a commercial TPS (Eclipse), beside SlicerRT's and CERR's, and its speed.

Usage: .venv/bin/python benchmarks/bench_dvh_eclipse.py [--runs 3]
Data: ../shared/data/slicerrt-eclipse-prostate (see its README). Differences are |x - Eclipse|
of Dmean, D95%, D2% in % of the 47.1 Gy plan maximum, each read off the systems' cumulative
DVHs the same way (DoseSeg's are its own metrics).
Targets: mean <= 0.15 % for each metric, worst <= 0.5 %, volumes within 1 %; reading the files
and all DVHs + metrics under 3 s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from DoseSegLib.analysis import metric_names as mn
from DoseSegLib.analysis.dvh import metrics_rows
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.analysis.sampling import gather_doses
from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.dvh_export import curve_dose_at_pct, curve_mean_dose, match_key, read_dvh_export
from DoseSegLib.io.patient import read_patient

CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "slicerrt-eclipse-prostate"
PLAN_MAX_GY = 47.1
METRICS = (mn.MEAN, mn.dose_at_pct(95), mn.dose_at_pct(2))


def curve_values(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """Dmean, D95%, D2% and volume of every structure of an exported DVH table."""
    return {
        match_key(name): (curve_mean_dose(c), curve_dose_at_pct(c, 95), curve_dose_at_pct(c, 2), c.volume_cc)
        for name, c in read_dvh_export(path).items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not CASE.is_dir():
        raise SystemExit(f"benchmark needs the Eclipse case at {CASE}")
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        case = align_case(read_patient(CASE))
        plan = evaluate_plan(case, constraints=[])
        times.append(time.perf_counter() - start)
    eclipse = curve_values(CASE / "reference" / "dvh_eclipse.csv")
    voxel_rows = metrics_rows(gather_doses(case.dose, case.structures, method="voxel"), case.dose)
    systems = {
        "DoseSeg": {match_key(str(r["structure"])): (*(r[m] for m in METRICS), r[mn.VOLUME]) for r in plan.metrics},
        "DoseSeg voxel": {match_key(str(r["structure"])): (*(r[m] for m in METRICS), r[mn.VOLUME])
                          for r in voxel_rows},
        "SlicerRT": curve_values(CASE / "reference" / "dvh_slicerrt.csv"),
        "CERR": curve_values(CASE / "reference" / "dvh_cerr.csv"),
    }
    print(f"Eclipse case: {len(case.structures)} structures; read + align + DVHs + metrics median "
          f"{np.median(times):.2f} s over {args.runs} runs (target < 3 s)")
    print("method:", "; ".join(sorted({str(r['dvh_method']) for r in plan.metrics})))
    print(f"\n|difference to Eclipse| in % of {PLAN_MAX_GY} Gy: Dmean / D95% / D2%, and volume difference")
    print(f"{'structure':16s}" + "".join(f"{name:>30s}" for name in systems))
    summary = {name: [] for name in systems}
    for key, ref in eclipse.items():
        cells = []
        for name, values in systems.items():
            ours = values[key]
            diffs = [100 * abs(a - b) / PLAN_MAX_GY for a, b in zip(ours[:3], ref[:3])]
            summary[name].append(diffs)
            cells.append(" ".join(f"{d:5.2f}" for d in diffs) + f" {100 * (ours[3] / ref[3] - 1):+6.2f}%")
        print(f"{key:16s}" + "".join(f"{c:>30s}" for c in cells))
    print(f"{'mean':16s}" + "".join(f"{' '.join(f'{d:5.2f}' for d in np.mean(v, axis=0)):>30s}"
                                     for v in summary.values()))
    print(f"{'worst':16s}" + "".join(f"{np.max(v):>30.2f}" for v in summary.values()))


if __name__ == "__main__":
    main()
