"""``doseseg train-features`` and ``doseseg features``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from DoseSegLib.cli.options import (
    CONFIG_DEFAULT,
    add_model_options,
    add_output,
    add_training_run_options,
    given,
    hu_windows,
    name_list,
    name_mapper,
    patient_path,
    run_options,
)
from DoseSegLib.core.errors import DoseSegError


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("expected positive integers separated by commas, e.g. 16,32,64,64")
    return sizes


def cmd_train_features(args: argparse.Namespace) -> None:
    from DoseSegLib.models.common.devices import select_device
    from DoseSegLib.models.features.data import FeatureInputs
    from DoseSegLib.models.features.net import FeatureNetConfig
    from DoseSegLib.models.features.training import FeatureTrainConfig, train_features

    inputs = given(args, "ct_windows", "grid")
    if "grid" in inputs:
        inputs["grid"] = inputs["grid"] * 3 if len(inputs["grid"]) == 1 else inputs["grid"]
        if len(inputs["grid"]) != 3:
            raise DoseSegError("--grid takes one size or three (X,Y,Z)")
    config = FeatureTrainConfig(
        inputs=FeatureInputs(**inputs),
        use_dose={"auto": None, "on": True, "off": False}[args.dose], **run_options(args), flip=not args.no_flip,
        net=FeatureNetConfig(**given(args, "channels", "latent")),
    )
    result = train_features(args.data, args.out, config, cache=args.cache, device=select_device(args.device))
    print(f"best val_mse {result['val_mse']:.5f} (mean-image baseline {result['val_baseline_mse']:.5f}) "
          f"epochs {result['epochs']}")


def cmd_features(args: argparse.Namespace) -> int:
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.tables import write_csv
    from DoseSegLib.models.features.predict import features_tables, load_features_model

    if len({p.name for p in args.patients}) != len(args.patients):
        raise DoseSegError("two patient folders share a name; their rows would collide")
    check_output_dir(args.output, args.force, args.patients)
    model = load_features_model(args.model, args.device, args.weights)
    failures: list[tuple[Path, str]] = []
    features, joined = features_tables(model, args.patients, args.radiomics, args.radiomics_classes,
                                       name_mapper(args), failures if len(args.patients) > 1 else None,
                                       args.any_site)
    for folder, message in failures:  # a batch finishes the good patients
        print(f"doseseg: error: {folder}: {message}", file=sys.stderr)
    if not features:
        raise DoseSegError("no patient could be described (see the errors above)")
    with staged_output(args.output, args.force, args.patients) as out:
        write_csv(out / "features.csv", features)
        if args.radiomics:
            write_csv(out / "radiomics_features.csv", joined)
    print(f"wrote {args.output} ({len(features)} of {len(args.patients)} patients, "
          f"{model.net.config.latent} features each)")
    return 1 if failures else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the feature commands; the training defaults are those of the config dataclasses (CONFIG_DEFAULT)."""
    p = sub.add_parser("train-features", help="train the 3D autoencoder of CT windows, targets and dose (resumes)")
    p.add_argument("--data", type=Path, required=True, help="folder with train/ and validation/ patient folders")
    p.add_argument("--out", type=Path, required=True, help="run folder (config, log.csv, last.pt, best.pt)")
    p.add_argument("--cache", type=Path, help="prepared-array cache (default OUT/cache)")
    p.add_argument("--ct-windows", type=hu_windows, **CONFIG_DEFAULT,
                   help="CT windows in HU, one channel each (default full range, soft tissue, bone, lung, brain)")
    p.add_argument("--dose", default="auto", choices=("auto", "on", "off"),
                   help="dose channel (auto: on when every training patient has a dose.nrrd)")
    p.add_argument("--grid", type=_sizes, **CONFIG_DEFAULT, help="fixed grid over the body box: N or X,Y,Z")
    p.add_argument("--channels", type=_sizes, **CONFIG_DEFAULT, help="encoder widths, one per stage")
    p.add_argument("--latent", type=int, **CONFIG_DEFAULT, help="number of features")
    p.add_argument("--no-flip", action="store_true", help="no left-right mirroring of training images")
    add_training_run_options(p, "FeatureTrainConfig", workers=True)
    p.set_defaults(func=cmd_train_features)

    p = sub.add_parser("features", help="one row of autoencoder features per patient (optionally with radiomics)")
    p.add_argument("patients", type=patient_path, nargs="+",
                   help="patient folders (ct.nrrd, structures/ with a PTV, dose)")
    add_output(p, help="writes OUTPUT/features.csv (and radiomics_features.csv with --radiomics)")
    add_model_options(p, "the default features model", "train-features")
    p.add_argument("--radiomics", action="store_true",
                   help="also join each patient's features to its per-structure radiomics rows")
    p.add_argument("--radiomics-classes", type=name_list, default=("firstorder",),
                   help="pyradiomics feature classes for --radiomics (default firstorder)")
    p.set_defaults(func=cmd_features)
