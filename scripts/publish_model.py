"""Copy trained weights into Resources/Models and (re)write their catalogue entry with the sha256.

Usage: .venv/bin/python scripts/publish_model.py RUN/best.pt --name NAME --task dose --version 1.0 \
           --card NAME.md [--default] [--half] [--base BASE]

``--half`` stores the floating-point weights in float16 (half the size; they are loaded
back into the float32 network, so inference runs as before, within float16 rounding).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from DoseSegLib.models.common.catalogue import models_dir, sha256_of


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
    folder = models_dir()
    target = folder / f"{args.name}.pt"
    if args.half:
        checkpoint = torch.load(args.weights, map_location="cpu", weights_only=True)
        checkpoint["state_dict"] = {k: v.half() if v.is_floating_point() else v
                                    for k, v in checkpoint["state_dict"].items()}
        torch.save(checkpoint, target)
    else:
        shutil.copyfile(args.weights, target)
    catalogue_path = folder / "catalogue.json"
    models = json.loads(catalogue_path.read_text())["models"] if catalogue_path.is_file() else []
    models = [m for m in models if m["name"] != args.name]
    if args.default:
        for m in models:
            if m["task"] == args.task:
                m["default"] = False
    models.append({"name": args.name, "task": args.task, "file": target.name, "sha256": sha256_of(target),
                   "version": args.version, "card": args.card, "default": args.default,
                   **({"base": args.base} if args.base else {})})
    catalogue_path.write_text(json.dumps({"models": models}, indent=2) + "\n")
    print(f"published {target} ({target.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
