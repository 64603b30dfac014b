"""Plan-evaluation speed on one OpenKBP patient: all DVHs + metrics, and radiomics vs bare pyradiomics.

Usage: .venv/bin/python benchmarks/bench_evaluation.py [--patient validation/pt_201] [--runs 5]
Targets: DVHs + metrics under 50 ms; radiomics (first-order + shape) overhead under 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import machine, median_seconds, require_data

from DoseSegLib.analysis.dvh import dvhs_of, metrics_rows
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.analysis.radiomics import make_extractor, radiomics_table
from DoseSegLib.analysis.sampling import gather_doses
from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient


def bare_pyradiomics(ct_image, mask_images: list) -> None:
    """pyradiomics alone: one extractor, first-order + shape, on ready-made SimpleITK images."""
    from radiomics import featureextractor

    extractor = featureextractor.RadiomicsFeatureExtractor()
    extractor.disableAllFeatures()
    extractor.enableFeatureClassByName("firstorder")
    extractor.enableFeatureClassByName("shape")
    for mask in mask_images:
        extractor.execute(ct_image, mask, label=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patient", default="validation/pt_201")
    parser.add_argument("--runs", type=int, default=5, help="radiomics runs (DVH runs: 10x as many)")
    args = parser.parse_args()
    case = align_case(read_patient(require_data() / args.patient))
    print(f"machine: {machine()}")
    print(f"patient {args.patient}: {len(case.structures)} structures, grid {case.ct.shape}")

    for method in ("auto", "voxel"):
        def dvh_and_metrics(method: str = method) -> None:
            gathered = gather_doses(case.dose, case.structures, case.fine_structures, method)
            dvhs_of(gathered, 0.1)
            metrics_rows(gathered, case.dose, case.targets, case.possible_dose_mask)

        median = median_seconds(dvh_and_metrics, 10 * args.runs)
        print(f"DVHs (0.1 Gy) + metrics, all structures, dvh_method {method}: median {1000 * median:.1f} ms "
              "(target < 50 ms)")
    median = median_seconds(lambda: evaluate_plan(case), 10 * args.runs)
    print(f"evaluate_plan (DVHs, metrics, clinical goals): median {1000 * median:.1f} ms")

    make_extractor()  # import pyradiomics outside the timings
    ct_image = case.ct.to_sitk()
    mask_images = [mask.to_sitk() for mask in case.structures.values()]
    ours, bare = [], []
    for _ in range(args.runs):  # interleaved, so background load affects both alike
        start = time.perf_counter()
        radiomics_table(case.ct, case.structures)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare_pyradiomics(ct_image, mask_images)
        bare.append(time.perf_counter() - start)
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    print(f"radiomics first-order + shape, all structures: median {ours_s:.2f} s; bare pyradiomics {bare_s:.2f} s; "
          f"overhead {100 * (ours_s / bare_s - 1):+.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
