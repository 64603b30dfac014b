"""``doseseg import-openkbp`` and ``doseseg align``: preparing patient folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from DoseSegLib.cli.options import add_names, add_output, add_patient, name_mapper


def cmd_import_openkbp(args: argparse.Namespace) -> None:
    from DoseSegLib.io.openkbp import read_openkbp_csv
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import write_patient

    check_output_dir(args.output, args.force, [args.src])
    case = read_openkbp_csv(args.src, name_mapper(args))
    with staged_output(args.output, args.force, [args.src]) as out:
        write_patient(out, case)
    print(f"wrote {args.output}")


def cmd_align(args: argparse.Namespace) -> None:
    from DoseSegLib.analysis.dosecheck import check_dose_coverage
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import dose_source, read_patient, write_patient

    inputs = [args.patient, args.segmentation]
    check_output_dir(args.output, args.force, inputs)
    case = read_patient(args.patient, name_mapper(args), args.segmentation, args.series)
    reference = case.dose
    case = align_case(case)
    if reference is not None:  # a dose that misses the structures is refused, as by run, dvh and evaluate
        check_dose_coverage(reference, case.structures, dose_source(args.patient, case))
    with staged_output(args.output, args.force, inputs) as out:
        write_patient(out, case)
    print(f"wrote {args.output}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the import-openkbp and align sub-commands."""
    p = sub.add_parser("import-openkbp", help="convert an OpenKBP CSV patient folder to the NRRD layout")
    p.add_argument("src", type=Path, help="OpenKBP patient folder (ct.csv, dose.csv, <structure>.csv, ...)")
    add_output(p)
    add_names(p)
    p.set_defaults(func=cmd_import_openkbp)

    p = sub.add_parser("align", help="resample structures, dose and possible-dose mask onto the CT grid")
    add_patient(p)
    add_output(p)
    p.set_defaults(func=cmd_align)
