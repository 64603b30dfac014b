"""Calibrate the DVH-metric intervals of a catalogue dose model on the OpenKBP validation split.

    PYTHONPATH=$PWD python scripts/calibrate_uncertainty.py --data ../shared/data/openkbp/validation \
        --cache runs/uncertainty_cache [--model NAME] [--compare 8] [--samples 4] [--write]

1. On the first ``--compare`` patients, draws ``--samples`` stochastic predictions with each sampling
   method and keeps the one whose spread best ranks the actual errors (Spearman, mean over families).
2. Draws the chosen method's samples on every patient, calibrates split-conformal intervals per
   metric family, and measures their coverage by leave-one-patient-out cross-validation.
3. With ``--write``, saves ``Resources/Models/<model>.uncertainty.json`` (model name, sha256, sampling,
   calibration, measured coverage). Per-patient metrics are cached in ``--cache`` (resumable).
Never run it on the test split.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from DoseSegLib.analysis.coverage import coverage_report, method_score
from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.dose.predict import load_dose_model
from DoseSegLib.models.dose.uncertainty import METHODS, SamplingConfig, calibration_path
from DoseSegLib.run.calibration import prediction_record, sample_record, sidecar


def collect(model, folder: Path, sampling: SamplingConfig, cache: Path) -> dict:
    """The patient's predicted, reference and sampled metrics (from the cache when there)."""
    path = cache / f"{folder.name}.{sampling.method}.{sampling.samples}.{sampling.seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    case = align_case(read_patient(folder))
    predicted = _cached_prediction(model, case, cache / f"{folder.name}.base.json")
    record = {**predicted, "samples": sample_record(model, case, sampling)}
    path.write_text(json.dumps(record))
    return record


def _cached_prediction(model, case, path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    record = prediction_record(model, case)
    path.write_text(json.dumps(record))
    return record


def card_table(report: dict) -> str:
    """The model card's table of the cross-validated coverage (markdown)."""
    lines = ["| family | n | coverage (95% CI) | mean width (Gy) | mean abs. error (Gy) | Spearman | q | floor (Gy) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, f in report["families"].items():
        lines.append(f"| {name} | {f['n']} | {f['coverage']:.3f} ({f['ci95'][0]:.3f}-{f['ci95'][1]:.3f}) | "
                     f"{f['mean_width_gy']:.2f} | {f['mean_abs_error_gy']:.2f} | {f['spearman']:.3f} | "
                     f"{f['quantile']:.2f} | {f['floor_gy']:.2f} |")
    p = report["pooled"]
    lines.append(f"| pooled | {p['n']} | {p['coverage']:.3f} ({p['ci95'][0]:.3f}-{p['ci95'][1]:.3f}) | | | "
                 f"{report['spearman_pooled']:.3f} | | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the validation split's patient folders")
    parser.add_argument("--cache", type=Path, required=True, help="folder for per-patient metrics (resumable)")
    parser.add_argument("--model", help="catalogue dose model (default: the default one)")
    parser.add_argument("--compare", type=int, default=8, help="patients on which to compare the methods")
    parser.add_argument("--samples", type=int, default=4, help="stochastic predictions per patient")
    parser.add_argument("--method", choices=METHODS, help="skip the comparison and use this method")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reverse", action="store_true", help="visit the patients last first (a second worker)")
    parser.add_argument("--write", action="store_true", help="write the model's calibration sidecar")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if "test" in args.data.name:
        sys.exit("refusing to calibrate on the test split")
    model = load_dose_model(args.model, "cpu")
    cache = args.cache / model.entry.sha256[:16]
    cache.mkdir(parents=True, exist_ok=True)
    folders = sorted(p for p in args.data.iterdir() if (p / "ct.nrrd").is_file())
    comparison = {}
    method = args.method
    if method is None:
        for name in METHODS:
            sampling = SamplingConfig(args.samples, name)
            records = [collect(model, f, sampling, cache) for f in folders[:args.compare]]
            comparison[name] = method_score(records)
            print(f"{name}: Spearman of spread vs error {comparison[name]}", flush=True)
        method = max(METHODS, key=lambda m: comparison[m]["mean"])
    sampling = SamplingConfig(args.samples, method)
    records = []
    for i, folder in enumerate(folders[::-1] if args.reverse else folders):
        records.append(collect(model, folder, sampling, cache))
        print(f"{i + 1}/{len(folders)} {folder.name}", flush=True)
    report = coverage_report(records, args.level)
    report["method_comparison"] = comparison
    print(json.dumps(report, indent=2))
    print(card_table(report))
    if args.write:
        written = sidecar(model.entry.name, model.entry.sha256, records, sampling, args.level,
                          f"{args.data.name} split, {len(folders)} patients", comparison)
        path = calibration_path(model)
        path.write_text(json.dumps(written, indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
