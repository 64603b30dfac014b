"""Copy trained weights into Resources/Models and (re)write their catalogue entry with the sha256.

Usage: .venv/bin/python scripts/publish_model.py RUN/best.pt --name NAME --task dose --version 1.0 \
           --card NAME.md [--default] [--half] [--base BASE]

``--half`` stores the floating-point weights in float16 (half the size; they are loaded
back into the float32 network, so inference runs as before, within float16 rounding).
For a clinic's own model (the user models directory, a card written from the run) use
``doseseg publish-model RUN --name NAME`` instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from DoseSegLib.models.common.catalogue import models_dir
from DoseSegLib.models.common.publish import publish_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("weights", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--task", required=True, choices=("dose", "segmentation", "features"))
    parser.add_argument("--version", required=True)
    parser.add_argument("--card", required=True, help="model card file name in Resources/Models")
    parser.add_argument("--default", action="store_true")
    parser.add_argument("--half", action="store_true", help="store float weights as float16")
    parser.add_argument("--base", help="a refiner's base model (catalogue name)")
    args = parser.parse_args()
    entry = publish_weights(args.weights, models_dir(), args.name, args.task, args.version, args.card,
                            default=args.default, half=args.half, base=args.base or "")
    print(f"published {entry.file} ({entry.file.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
