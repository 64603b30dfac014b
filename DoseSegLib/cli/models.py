"""``doseseg publish-model`` (a training run as a named user model) and ``doseseg models`` (every model)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_publish_model(args: argparse.Namespace) -> int:
    from DoseSegLib.models.common.catalogue import user_models_dir
    from DoseSegLib.run.publish import publish_run

    folder = args.models_dir or user_models_dir()
    entry = publish_run(args.run, args.name, folder, args.version, args.force, args.data, not args.no_calibration)
    print(f"published {entry.task} model '{entry.name}' in {folder} (card {folder / entry.card}); "
          f"use it with --model {entry.name}")
    return 0


def _scores(scores: dict) -> str:
    return ", ".join(f"{k.removeprefix('val_')} {v:g}" for k, v in scores.items()) or "see card"


def cmd_models(args: argparse.Namespace) -> int:
    import json

    from DoseSegLib.models.common.catalogue import list_models, user_models_dir

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for model in models:
        default = ", default" if model["default"] else ""
        print(f"{model['name']}  [{model['task']}, {model['source']}{default}]")
        print(f"    site: {model['site'] or 'not recorded'}")
        print(f"    structures: {', '.join(model['structures']) or '-'}")
        print(f"    validation: {_scores(model['scores'])}")
        print(f"    card: {model['card'] or '-'}")
    print(f"user models directory: {user_models_dir()} (set DOSESEG_MODELS_DIR to change it)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish-model", help="publish a train-dose/train-seg run as a named user model",
                       description="Copy RUN/best.pt into the user models directory with a catalogue entry "
                                   "(sha256) and a model card written from the run (cohort, split, command, "
                                   "hardware, time, validation scores); then --model NAME finds it.")
    p.add_argument("run", type=Path, help="the training run folder (best.pt, config.json, log.csv)")
    p.add_argument("--name", required=True, help="model name (letters, digits, . _ -)")
    p.add_argument("--models-dir", type=Path, help="where to publish (default $DOSESEG_MODELS_DIR or the per-user "
                                                   "data folder); --model finds it only there")
    p.add_argument("--version", default="1.0", help="the model's version (default 1.0)")
    p.add_argument("--data", type=Path, metavar="COHORT",
                   help="the cohort the run trained on, if it moved (its validation split calibrates the "
                        "uncertainty intervals of a dose model)")
    p.add_argument("--force", action="store_true", help="replace a user model of that name")
    p.add_argument("--no-calibration", action="store_true",
                   help="skip the dose model's calibrations on the cohort (uncertainty intervals, applicability "
                        "check, prescription convention); --uncertainty is then refused")
    p.set_defaults(func=cmd_publish_model)

    p = sub.add_parser("models", help="list the bundled and user models (name, site, structures, scores, card)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_models)
