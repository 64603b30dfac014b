"""Measure how a dose model's training plans are normalised to their prescription; write ``<model>.prescription.json``.

    PYTHONPATH=$PWD python scripts/measure_prescription_convention.py --data ../shared/data/openkbp/train \
        --cache /tmp/convention [--model NAME] [--write]

For each training patient, the primary target (the highest prescription) and its D98%, D95%, D50% and
mean dose (partial-volume DVH, as ``doseseg run`` computes them) relative to the prescription; the
convention is the metric whose ratio varies least over the plans (see ``analysis.normalisation``).
Per-patient values are cached in ``--cache`` (resumable). Never run it on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from DoseSegLib.analysis.normalisation import METRICS, measure_convention
from DoseSegLib.models.common.catalogue import find_model, models_dir
from DoseSegLib.run.calibration import plan_ratios


def ratios(folder: Path, cache: Path) -> dict | None:
    """The primary target's metric / prescription ratios of one training plan (cached)."""
    path = cache / f"{folder.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    row = plan_ratios(folder)
    if row is not None:
        path.write_text(json.dumps(row))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the training split's patient folders")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--model", action="append", help="catalogue dose model(s) (default: the default one)")
    parser.add_argument("--metric", choices=METRICS,
                        help="use this metric (default: the one whose ratio varies least over the plans)")
    parser.add_argument("--reason", default="", help="why --metric was chosen (stored in the sidecar)")
    parser.add_argument("--write", action="store_true", help="write <model>.prescription.json beside the weights")
    args = parser.parse_args()
    if "test" in args.data.name:
        sys.exit("refusing to measure on the test split")
    args.cache.mkdir(parents=True, exist_ok=True)
    folders = sorted(p for p in args.data.iterdir() if (p / "ct.nrrd").is_file())
    rows = [r for r in (ratios(f, args.cache) for f in folders) if r is not None]
    result = {**measure_convention(rows, args.metric), "data": f"{args.data.name} split, {len(rows)} plans"}
    if args.reason:
        result["reason"] = args.reason
    print(json.dumps(result, indent=1))
    for name in args.model or [None]:
        entry = find_model("dose", name)
        sidecar = {"model": entry.name, "sha256": entry.sha256, **result}
        if args.write:
            path = models_dir() / f"{entry.name}.prescription.json"
            path.write_text(json.dumps(sidecar, indent=1) + "\n")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
