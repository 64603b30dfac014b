"""The ``doseseg`` command line: thin argument parsing over the library's steps."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from DoseSegLib import __version__
from DoseSegLib.core.errors import DoseSegError


def _names(args: argparse.Namespace):
    from DoseSegLib.core.names import NameMapper

    return NameMapper.from_json(args.names) if getattr(args, "names", None) else NameMapper()


def cmd_import_openkbp(args: argparse.Namespace) -> None:
    from DoseSegLib.io.openkbp import read_openkbp_csv
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import write_patient

    check_output_dir(args.output, args.force, [args.src])
    case = read_openkbp_csv(args.src, _names(args))
    with staged_output(args.output, args.force, [args.src]) as out:
        write_patient(out, case)
    print(f"wrote {args.output}")


def cmd_align(args: argparse.Namespace) -> None:
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import read_patient, write_patient

    check_output_dir(args.output, args.force, [args.patient, args.segmentation])
    case = align_case(read_patient(args.patient, _names(args), args.segmentation, args.series))
    with staged_output(args.output, args.force, [args.patient, args.segmentation]) as out:
        write_patient(out, case)
    print(f"wrote {args.output}")


def _add_common(parser: argparse.ArgumentParser, names: bool = True) -> None:
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (must be new or empty)")
    parser.add_argument("--force", action="store_true", help="replace an output folder that holds results")
    if names:
        parser.add_argument("--names", type=Path, help='JSON {"alias": "CanonicalName"} added to the default aliases')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doseseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"DoseSeg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("import-openkbp", help="convert an OpenKBP CSV patient folder to the NRRD layout")
    p.add_argument("src", type=Path, help="OpenKBP patient folder (ct.csv, dose.csv, <structure>.csv, ...)")
    _add_common(p)
    p.set_defaults(func=cmd_import_openkbp)

    p = sub.add_parser("align", help="resample structures, dose and possible-dose mask onto the CT grid")
    p.add_argument("patient", type=Path, help="patient folder (ct.nrrd, structures/ or a .seg.nrrd, dose.nrrd)")
    p.add_argument("--segmentation", type=Path, help="a .seg.nrrd or an RTSTRUCT to use instead of structures/")
    p.add_argument("--series", help="DICOM patient: the CT SeriesInstanceUID, when the folder holds several")
    _add_common(p)
    p.set_defaults(func=cmd_align)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable]:
    """Sub-command registrars of the other modules (each adds its own parsers)."""
    from DoseSegLib.cli import dicom as cli_dicom
    from DoseSegLib.cli import dose as cli_dose
    from DoseSegLib.cli import evaluation as cli_evaluation
    from DoseSegLib.cli import features as cli_features
    from DoseSegLib.cli import run as cli_run
    from DoseSegLib.cli import seg as cli_seg
    from DoseSegLib.cli import whatif as cli_whatif

    return [cli_dicom.register, cli_dose.register, cli_evaluation.register, cli_features.register, cli_run.register,
            cli_seg.register, cli_whatif.register]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="doseseg: %(levelname)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (DoseSegError, OSError) as exc:  # OSError: a file or folder the system refused (permissions, disk)
        print(f"doseseg: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("doseseg: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an input we did not foresee: still one line, the traceback with -v
        if args.verbose:
            raise
        print(f"doseseg: error: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
