"""DoseSeg's DVH from DICOM contours against Eclipse's own DVH (the DICOM route of bench_dvh_eclipse).

Usage: .venv/bin/python benchmarks/bench_dvh_dicom.py [--decimals 2]

Data: ../shared/data/slicerrt-eclipse-prostate. The case holds Eclipse's contours as masks
rasterised finer than the dose grid; its planar contours are recovered from them exactly
(``Testing/dicom_helpers.slab_planes``) and written with DoseSeg's exporter as an RTSTRUCT
(BODY declared an ORGAN so that it gets a DVH), beside a CT series and the RTDOSE. The folder is
read with ``read_patient`` and evaluated as ``doseseg dvh`` does. Differences are |x - Eclipse|
of Dmean, D95%, D2% in % of the 47.1 Gy plan maximum (Eclipse's read off its cumulative DVH),
and the volume difference. Goal (issue 27): worst <= 0.75 %, every mean <= 0.25 %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_dvh_eclipse import CASE, METRICS, PLAN_MAX_GY, curve_values

from DoseSegLib.analysis import metric_names as mn
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.dvh_export import match_key
from DoseSegLib.io.patient import read_patient

TESTING = Path(__file__).resolve().parents[1] / "Testing"  # the DICOM writer of the tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decimals", type=int, help="round contour coordinates to this many decimals, as TPSs do")
    args = parser.parse_args()
    if not CASE.is_dir():
        raise SystemExit(f"benchmark needs the Eclipse case at {CASE}")
    sys.path.insert(0, str(TESTING))
    from dicom_helpers import round_contours, write_dicom_from_slab_masks

    with tempfile.TemporaryDirectory(prefix="bench-dvh-dicom-") as scratch:
        folder = write_dicom_from_slab_masks(Path(scratch) / "prostate", read_patient(CASE), 2.5, body_kind="ORGAN")
        if args.decimals is not None:
            round_contours(folder / "rtstruct.dcm", args.decimals, xy_decimals=args.decimals)
        start = time.perf_counter()
        case = align_case(read_patient(folder))
        plan = evaluate_plan(case, constraints=[])
        seconds = time.perf_counter() - start
    eclipse = curve_values(CASE / "reference" / "dvh_eclipse.csv")
    ours = {match_key(str(r["structure"])): (*(r[m] for m in METRICS), r[mn.VOLUME]) for r in plan.metrics}
    print(f"DICOM route: read + align + DVHs + metrics {seconds:.2f} s; method: "
          + "; ".join(sorted({str(r['dvh_method']) for r in plan.metrics})))
    print(f"|difference to Eclipse| in % of {PLAN_MAX_GY} Gy: Dmean / D95% / D2%, and volume difference")
    rows = []
    for key, ref in eclipse.items():
        diffs = [100 * abs(a - b) / PLAN_MAX_GY for a, b in zip(ours[key][:3], ref[:3], strict=True)]
        rows.append(diffs)
        print(f"{key:16s}" + " ".join(f"{d:5.2f}" for d in diffs) + f" {100 * (ours[key][3] / ref[3] - 1):+6.2f}%")
    mean = np.mean(rows, axis=0)
    print(f"{'mean':16s}" + " ".join(f"{d:5.2f}" for d in mean) + f"   worst {np.max(rows):.2f}"
          f"   (goal: every mean <= 0.25, worst <= 0.75)")


if __name__ == "__main__":
    main()
