"""``doseseg train-dose`` and ``doseseg predict-dose``."""

from __future__ import annotations

import argparse
from pathlib import Path

from DoseSegLib.cli.options import (
    CONFIG_DEFAULT,
    add_model_options,
    add_normalise_option,
    add_output,
    add_training_run_options,
    add_uncertainty_options,
    given,
    name_mapper,
    net_widths,
    patient_path,
    probability,
    run_options,
    training_patch,
)
from DoseSegLib.cli.shard import add_shard_option, apply_shard


def cmd_train_dose(args: argparse.Namespace) -> None:
    from DoseSegLib.models.dose.augment import AugmentConfig
    from DoseSegLib.models.dose.net import DoseNetConfig
    from DoseSegLib.models.dose.training import TrainConfig, train_dose

    config = TrainConfig(
        **run_options(args), **given(args, "structure_weight", "moment_weight"), **training_patch(args),
        init_weights=str(args.init) if args.init else None,
        net=DoseNetConfig(**net_widths(args), **given(args, "dropout")),
        augment=AugmentConfig(**given(args, "elastic_prob")),
    )
    result = train_dose(args.data, args.out, config, cache=args.cache, device=_device(args.device))
    print(f"best val_dose_score {result['val_dose_score']:.4f} val_dvh_score {result['val_dvh_score']:.4f} "
          f"epochs {result['epochs']}")


def cmd_train_dose_refiner(args: argparse.Namespace) -> None:
    from DoseSegLib.models.dose.refine_net import RefineNetConfig
    from DoseSegLib.models.dose.refine_training import RefineConfig, train_refiner

    config = RefineConfig(
        **run_options(args), **training_patch(args), base_model=args.base_model,
        base_weights=str(args.base_weights) if args.base_weights else None,
        **given(args, "edge_weight", "hot_weight"), moment_weight=args.moment_weight,
        net=RefineNetConfig(**net_widths(args)),
    )
    result = train_refiner(args.data, args.out, config, cache=args.cache, device=_device(args.device))
    print(f"best val_dose_score {result['val_dose_score']:.4f} val_dvh_score {result['val_dvh_score']:.4f} "
          f"epochs {result['epochs']}")


def cmd_predict_dose(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from DoseSegLib.analysis.ctcheck import check_ct
    from DoseSegLib.analysis.site import check_site
    from DoseSegLib.cli.progress import progress_enabled
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import DOSE_FILE, ct_source, read_patient, write_dose
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose

    if not apply_shard(args):
        return 0
    names = {p.name for p in args.patients}
    if len(names) != len(args.patients):
        raise DoseSegError("two patient folders share a name; their outputs would collide")
    check_output_dir(args.output, args.force, args.patients)
    mapper = name_mapper(args)
    model = load_dose_model(args.model, args.device, args.weights)
    from DoseSegLib.core.options import DvhMethod
    from DoseSegLib.run.trust import TrustChecks, trust_notes

    trust = TrustChecks.load(model, args.device)
    if args.uncertainty:
        from DoseSegLib.models.dose.uncertainty import check_uncertainty, predict_dose_uncertainty, write_uncertainty

        check_uncertainty(model, args.level)
    failures = 0
    with staged_output(args.output, args.force, args.patients) as out:
        for folder in tqdm(args.patients, desc="predict-dose", unit="patient",
                           disable=len(args.patients) < 2 or not progress_enabled()):
            try:
                case = align_case(read_patient(folder, mapper))
                check_ct(case.ct, ct_source(folder, case))
                site_note = check_site(case, args.any_site, model.oars if model.site else None, model.site)
                dose = predict_case_dose(model, case, tta=args.tta)
                dose, verdict, normalisation, why = trust.checked(case, dose, not args.no_normalise,
                                                                  DvhMethod.AUTO)
                outside = verdict is not None and not verdict.in_distribution
                uncertainty = (predict_dose_uncertainty(model, case, dose, args.level, outside)
                               if args.uncertainty else None)
            except DoseSegError as exc:
                failures += 1
                print(f"doseseg: error: {folder}: {exc}", file=sys.stderr)
                continue
            (out / folder.name).mkdir()
            write_dose(out / folder.name / DOSE_FILE, dose)
            notes = [*case.notes, *([site_note] if site_note else []), *trust_notes(trust, verdict, normalisation, why)]
            if outside:
                print(f"doseseg: {folder.name}: {trust_notes(trust, verdict, None)[0]}", file=sys.stderr)
            if notes:  # what was interpreted or overridden, beside the result
                (out / folder.name / "notes.txt").write_text("\n".join(notes) + "\n", encoding="utf-8")
            if uncertainty is not None:
                write_uncertainty(out / folder.name, uncertainty)
    print(f"wrote {args.output} ({len(args.patients) - failures} of {len(args.patients)} patients)")
    return 1 if failures else 0


def _device(name: str):
    from DoseSegLib.models.common.devices import select_device

    return select_device(name)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the dose commands; the training defaults are those of the config dataclasses (CONFIG_DEFAULT)."""
    p = sub.add_parser("train-dose", help="train the dose-prediction network (resumes from OUT/last.pt)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with train/ and validation/")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.csv, best.pt")
    p.add_argument("--cache", type=Path, help="preprocessed-array cache (default OUT/cache)")
    p.add_argument("--init", type=Path, help="start from these weights (a best.pt or Resources/Models/<model>.pt; "
                                             "same --channels)")
    p.add_argument("--patch", type=int, nargs=3, **CONFIG_DEFAULT, help="training patch (multiple of 16)")
    p.add_argument("--channels", type=int, nargs="+", **CONFIG_DEFAULT, help="U-Net widths")
    p.add_argument("--dropout", type=float, **CONFIG_DEFAULT)
    p.add_argument("--structure-weight", type=float, **CONFIG_DEFAULT,
                   help="extra loss weight inside structures")
    p.add_argument("--moment-weight", type=float, **CONFIG_DEFAULT,
                   help="weight of a DVH-aware loss term (dose moments 1, 2, 10 of each structure, Gy^2); e.g. 0.05")
    p.add_argument("--elastic-prob", type=probability, **CONFIG_DEFAULT,
                   help="probability of an elastic warp")
    add_training_run_options(p, "TrainConfig")
    p.set_defaults(func=cmd_train_dose)

    p = sub.add_parser("train-dose-refiner", help="train a dose refiner on a frozen base dose model's predictions")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with train/ and validation/")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.csv, best.pt")
    p.add_argument("--cache", type=Path, help="base predictions and inputs cache (default OUT/cache)")
    p.add_argument("--base-model", help="catalogue dose model to refine (default: the default dose model, or its base)")
    p.add_argument("--base-weights", type=Path, help="a train-dose best.pt to refine instead")
    p.add_argument("--patch", type=int, nargs=3, **CONFIG_DEFAULT, help="training patch (multiple of 16)")
    p.add_argument("--channels", type=int, nargs="+", **CONFIG_DEFAULT, help="U-Net widths")
    p.add_argument("--edge-weight", type=float, **CONFIG_DEFAULT,
                   help="extra loss weight near target boundaries")
    p.add_argument("--hot-weight", type=float, **CONFIG_DEFAULT,
                   help="extra loss weight where dose exceeds the Rx")
    p.add_argument("--moment-weight", type=float, default=0.05, help="weight of the DVH-aware moment term (Gy^2)")
    add_training_run_options(p, "RefineConfig", workers=True)
    p.set_defaults(func=cmd_train_dose_refiner)

    p = sub.add_parser("predict-dose", help="predict the 3D dose of one or more patients")
    p.add_argument("patients", type=patient_path, nargs="+", help="patient folders (ct.nrrd, structures/ with a PTV)")
    add_output(p, help="writes OUTPUT/<patient>/dose.nrrd")
    add_model_options(p, "the bundled default dose model", "train-dose")
    p.add_argument("--tta", action="store_true", help="average with a left-right mirrored prediction")
    add_shard_option(p)
    add_uncertainty_options(p)
    add_normalise_option(p)
    p.set_defaults(func=cmd_predict_dose)
