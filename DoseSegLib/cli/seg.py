"""``doseseg train-seg``, ``doseseg segment`` and ``doseseg evaluate-seg``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from DoseSegLib.cli.options import (
    CONFIG_DEFAULT,
    add_device,
    add_model_options,
    add_names,
    add_output,
    add_training_run_options,
    given,
    hu_windows,
    name_list,
    name_mapper,
    net_widths,
    patient_path,
    probability,
    run_options,
    training_patch,
)
from DoseSegLib.cli.shard import add_shard_option, apply_shard
from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import SegLoss


def site_labels(data: Path) -> tuple[str, ...]:
    """The organs of a cohort's site config (``doseseg build-cohort``), else OpenKBP's."""
    from DoseSegLib.io.cohort.site import read_site

    site = read_site(data)
    return site.oars if site is not None else OARS


def cmd_train_seg(args: argparse.Namespace) -> None:
    from DoseSegLib.models.common.devices import select_device
    from DoseSegLib.models.seg.data import InputSpec
    from DoseSegLib.models.seg.net import SegNetConfig
    from DoseSegLib.models.seg.training import SegTrainConfig, train_segmentation

    if getattr(args, "loss", None) != SegLoss.DOSELO and (args.dose_model or args.dose_weights):
        raise DoseSegError("--dose-model and --dose-weights only apply to --loss doselo")
    config = SegTrainConfig(
        **given(args, "loss", "dose_weight"), dose_model=args.dose_model,
        dose_weights=str(args.dose_weights) if args.dose_weights else None,
        init_weights=str(args.init) if args.init else None, labels=args.labels or site_labels(args.data),
        inputs=InputSpec(**given(args, "images", "ct_windows")), **run_options(args), **training_patch(args),
        **given(args, "foreground"), balanced=not args.no_balance, reset_labels=args.reset_labels,
        **given(args, "truncate"), net=SegNetConfig(**net_widths(args), squeeze_excitation=not args.no_se,
                                                    **given(args, "dropout")),
    )
    result = train_segmentation(args.data, args.out, config, cache=args.cache, device=select_device(args.device))
    print(f"best val_dice {result['val_dice']:.4f} epochs {result['epochs']}")


def cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from DoseSegLib.cli.progress import progress_enabled
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.models.seg.predict import load_segmentation_model, segment_folder, write_masks

    if not apply_shard(args):
        return 0
    if len({p.name for p in args.patients}) != len(args.patients):
        raise DoseSegError("two patient folders share a name; their outputs would collide")
    check_output_dir(args.output, args.force, args.patients)
    model = load_segmentation_model(args.model, args.device, args.weights)
    failures = 0
    with staged_output(args.output, args.force, args.patients) as out:
        for folder in tqdm(args.patients, desc="segment", unit="patient",
                           disable=len(args.patients) < 2 or not progress_enabled()):
            try:
                masks = segment_folder(model, folder, tta=args.tta)
                (out / folder.name).mkdir()
                write_masks(out / folder.name, masks)
            except DoseSegError as exc:
                failures += 1
                print(f"doseseg: error: {folder}: {exc}", file=sys.stderr)
    print(f"wrote {args.output} ({len(args.patients) - failures} of {len(args.patients)} patients)")
    return 1 if failures else 0


def cmd_evaluate_seg(args: argparse.Namespace) -> None:
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.tables import write_csv
    from DoseSegLib.models.seg.evaluation import evaluate_folder, summarise

    inputs = [args.predictions, args.reference]
    check_output_dir(args.output, args.force, inputs)
    dose_model = None
    if not args.no_rmae:
        from DoseSegLib.models.dose.predict import load_dose_model

        dose_model = load_dose_model(args.dose_model, args.device)
    rows = evaluate_folder(args.predictions, args.reference, args.labels, dose_model, name_mapper(args),
                           args.allow_missing)
    summary = summarise(rows)
    with staged_output(args.output, args.force, inputs) as out:
        write_csv(out / "per_structure.csv", rows, digits=5)
        write_csv(out / "summary.csv", summary, digits=5)
    mean = summary[-1]
    print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in mean.items()))
    print(f"wrote {args.output}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the segmentation commands; the training defaults are those of the config dataclasses (CONFIG_DEFAULT)."""
    p = sub.add_parser("train-seg", help="train the OAR segmentation network (resumes from OUT/last.pt)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder with train/ and validation/")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.csv, best.pt")
    p.add_argument("--loss", choices=SegLoss.choices(), **CONFIG_DEFAULT)
    p.add_argument("--dose-model", help="DOSELO: catalogue name of the frozen dose network (default model)")
    p.add_argument("--dose-weights", type=Path, help="DOSELO: a train-dose best.pt instead of the catalogue")
    p.add_argument("--lambda", dest="dose_weight", type=float, **CONFIG_DEFAULT,
                   help="DOSELO: weight of the dose MSE (Gy^2)")
    p.add_argument("--init", type=Path, help="start from a train-seg best.pt (e.g. DOSELO fine-tuning)")
    p.add_argument("--inputs", dest="images", type=name_list, **CONFIG_DEFAULT,
                   help="input images in each patient folder, resampled onto the first (default ct.nrrd)")
    p.add_argument("--labels", type=name_list,
                   help="structures to segment (default: the organs of DATA/site.json from build-cohort, else the "
                        "7 OpenKBP OARs)")
    p.add_argument("--ct-windows", type=hu_windows, **CONFIG_DEFAULT,
                   help="CT windows as channels, e.g. --ct-windows=-1024:1024,-160:240")
    p.add_argument("--cache", type=Path, help="prepared-array cache (default OUT/cache)")
    p.add_argument("--patch", type=int, nargs=3, **CONFIG_DEFAULT, help="training patch (multiple of 16)")
    p.add_argument("--channels", type=int, nargs="+", **CONFIG_DEFAULT, help="U-Net widths")
    p.add_argument("--no-se", action="store_true", help="without squeeze-and-excitation layers")
    p.add_argument("--dropout", type=float, **CONFIG_DEFAULT)
    p.add_argument("--foreground", type=probability, **CONFIG_DEFAULT,
                   help="share of training patches centred on a voxel of a structure")
    p.add_argument("--reset-labels", type=name_list, default=(),
                   help="labels whose output bias is reset to their prior log-odds before training (e.g. a label "
                        "an --init model never predicts)")
    p.add_argument("--truncate", type=probability, **CONFIG_DEFAULT,
                   help="share of training patches cut at a random axial plane and padded above it, as a scan "
                        "whose field of view stops short of the skull top")
    p.add_argument("--no-balance", action="store_true",
                   help="centre patches on structures uniformly, not inversely to how many patients have them")
    add_training_run_options(p, "SegTrainConfig", workers=True)
    p.set_defaults(func=cmd_train_seg)

    p = sub.add_parser("segment", help="auto-segment the organs at risk of one or more patients")
    p.add_argument("patients", type=patient_path, nargs="+",
                   help="patient folders (ct.nrrd and the model's other inputs)")
    add_output(p, help="writes OUTPUT/<patient>/segmentation.seg.nrrd and structures/<Name>.nrrd")
    add_model_options(p, "the default segmentation model", "train-seg", names=False, any_site=False)
    p.add_argument("--tta", action="store_true",
                   help="average with a left-right mirrored prediction (twice the time)")
    add_shard_option(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate-seg", help="Dice, HD95 and dosimetric RMAE of predicted segmentations")
    p.add_argument("predictions", type=Path, help="folder of patient folders written by 'doseseg segment'")
    p.add_argument("--reference", type=Path, required=True, help="folder of the reference patient folders")
    add_output(p, help="writes per_structure.csv and summary.csv")
    add_names(p)
    p.add_argument("--labels", type=name_list, default=OARS, help="structures to score (default the 7 OARs)")
    p.add_argument("--allow-missing", action="store_true",
                   help="score only the reference patients that have a prediction")
    p.add_argument("--dose-model", help="catalogue dose model for RMAE (default model)")
    p.add_argument("--no-rmae", action="store_true", help="skip the dosimetric error (no dose model needed)")
    add_device(p)
    p.set_defaults(func=cmd_evaluate_seg)
