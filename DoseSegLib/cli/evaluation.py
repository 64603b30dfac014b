"""``doseseg dvh``, ``doseseg evaluate`` and ``doseseg radiomics``: plan evaluation from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from DoseSegLib.cli.options import MAX_DVH_BINS, add_names, add_output, add_patient, dose_step, name_mapper
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import DvhMethod


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _names_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_dvh_method(parser: argparse.ArgumentParser) -> None:
    """The ``--dvh-method`` option (see DoseSegLib.analysis.sampling)."""
    parser.add_argument("--dvh-method", choices=DvhMethod.choices(), default=DvhMethod.AUTO.value,
                        help="auto: partial volume (structures on their own finer grid, small ones oversampled, "
                             "dose interpolated trilinearly); voxel: dose-grid voxels only (default auto)")


def cmd_dvh(args: argparse.Namespace) -> None:
    from DoseSegLib.analysis.constraints import load_constraints
    from DoseSegLib.analysis.ctcheck import check_ct
    from DoseSegLib.analysis.plan import evaluate_plan, load_plan
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import ct_source

    inputs = [args.patient, args.dose, args.segmentation, args.constraints]
    check_output_dir(args.output, args.force, inputs)
    constraints = load_constraints(args.constraints)
    case = load_plan(args.patient, args.dose, name_mapper(args), args.segmentation, args.allow_high_dose, args.series)
    check_ct(case.ct, ct_source(args.patient, case), strict=False)
    dose = case.require_dose()
    bins = float(dose.array.max()) / args.step
    if bins > MAX_DVH_BINS:
        raise DoseSegError(f"{args.dose or args.patient}: --step {args.step:g} Gy gives {bins:.3g} DVH bins for a "
                           f"maximum of {float(dose.array.max()):.4g} Gy (at most {MAX_DVH_BINS:g}): use a "
                           "larger --step")
    result = evaluate_plan(case, args.step, args.vx, constraints, args.dvh_method)
    with staged_output(args.output, args.force, inputs) as out:
        result.write(out)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
    print(f"wrote {args.output} ({len(result.metrics)} structures; clinical goals: {counts or 'none'})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from DoseSegLib.analysis.evaluation import evaluate_predictions, write_evaluation
    from DoseSegLib.io.outputs import check_output_dir, staged_output

    check_output_dir(args.output, args.force, [args.predictions, args.reference])
    result = evaluate_predictions(
        args.predictions, args.reference, args.allow_missing, args.allow_high_dose, progress=True,
        mapper=name_mapper(args),
    )
    with staged_output(args.output, args.force, [args.predictions, args.reference]) as out:
        write_evaluation(out, result)
    print(f"wrote {args.output}")
    print(result.summary())


def cmd_radiomics(args: argparse.Namespace) -> None:
    from DoseSegLib.analysis.dosecheck import check_dose_units
    from DoseSegLib.analysis.radiomics import radiomics_table
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import dose_source, read_patient
    from DoseSegLib.io.tables import write_csv

    inputs = [args.patient, args.segmentation, args.params]
    check_output_dir(args.output, args.force, inputs)
    case = align_case(read_patient(args.patient, name_mapper(args), args.segmentation, args.series))
    if args.dose:
        if case.dose is None:
            raise DoseSegError(f"{args.patient}: --dose needs the patient's dose (dose.nrrd or an RTDOSE)")
        check_dose_units(case.dose, dose_source(args.patient, case), args.allow_high_dose)
    if not case.structures:
        raise DoseSegError(f"{args.segmentation or args.patient / 'structures'}: no structure to describe "
                           "(add structures/<Name>.nrrd or give --segmentation)")
    provenance: dict = {}
    rows = radiomics_table(
        case.ct, case.structures, args.classes, args.params, case.dose if args.dose else None, args.dose_bin_width,
        provenance,
    )
    with staged_output(args.output, args.force, inputs) as out:
        write_csv(out / "radiomics.csv", rows)
        (out / "radiomics.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {args.output} ({len(rows)} structures, {len(rows[0]) - 1 if rows else 0} features)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the dvh, evaluate and radiomics sub-commands."""
    p = sub.add_parser("dvh", help="DVHs, DVH metrics and clinical goals of a patient's dose")
    add_patient(p)
    p.add_argument("--dose", type=Path, help="dose NRRD (Gy) or RTDOSE to use instead of the folder's dose")
    p.add_argument("--step", type=dose_step, default=0.1, help="DVH dose bin width in Gy, 0.001 to 5 (default 0.1)")
    p.add_argument("--vx", type=_floats, default=[], help="doses (Gy) for V_x metrics, e.g. 20,30,50")
    p.add_argument("--constraints", type=Path,
                   help="CSV of clinical goals, or a site table: head-and-neck (default), prostate")
    p.add_argument("--allow-high-dose", action="store_true", help="accept a dose above 200 Gy (else taken for cGy)")
    add_dvh_method(p)
    add_output(p)
    p.set_defaults(func=cmd_dvh)

    p = sub.add_parser(
        "evaluate", help="OpenKBP dose and DVH scores of predicted doses against reference patients",
        description="OpenKBP dose and DVH scores of predicted doses against reference patients. The DVH score "
                    "covers every target with a known prescription (D99%, D95%, D1%; --prescription PTV1=60 "
                    "makes PTV1 one) and every other structure but the body (D0.1cc, mean), by its name after "
                    "--names, as run's comparison does (its dvh_errors.csv has the same rows); on OpenKBP "
                    "patients these are the challenge's ten structures.")
    p.add_argument("predictions", type=Path, help="folder of predictions: <patient>/dose.nrrd")
    p.add_argument("--reference", type=Path, required=True, help="folder of reference patients (e.g. a split)")
    p.add_argument("--allow-missing", action="store_true", help="score only the patients that have a prediction")
    p.add_argument("--allow-high-dose", action="store_true", help="accept doses above 200 Gy (else taken for cGy)")
    add_output(p)
    add_names(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("radiomics", help="pyradiomics features of every structure (and optionally of the dose)")
    add_patient(p, help="patient folder (ct.nrrd, structures/ or a .seg.nrrd)")
    p.add_argument("--params", type=Path, help="pyradiomics parameter file (YAML or JSON)")
    p.add_argument("--classes", type=_names_list,
                   help="feature classes, e.g. firstorder,shape,glcm (default: firstorder,shape, "
                        "or the parameter file's)")
    p.add_argument("--dose", action="store_true", help="also compute dose features (dose_ columns)")
    p.add_argument("--dose-bin-width", type=dose_step, default=1.0,
                   help="bin width of the dose features in Gy, 0.001 to 5 (default 1)")
    p.add_argument("--allow-high-dose", action="store_true", help="accept a dose above 200 Gy")
    add_output(p)
    p.set_defaults(func=cmd_radiomics)
