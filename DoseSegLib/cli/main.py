"""The ``doseseg`` command line: thin argument parsing over the library's steps."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.version import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doseseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"DoseSeg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for register in _commands():
        register(sub)
    return parser


def _commands() -> list[Callable]:
    """Sub-command registrars of the command modules (each adds its own parsers)."""
    from DoseSegLib.cli import clinic as cli_clinic
    from DoseSegLib.cli import dicom as cli_dicom
    from DoseSegLib.cli import dose as cli_dose
    from DoseSegLib.cli import evaluation as cli_evaluation
    from DoseSegLib.cli import features as cli_features
    from DoseSegLib.cli import models as cli_models
    from DoseSegLib.cli import patient as cli_patient
    from DoseSegLib.cli import run as cli_run
    from DoseSegLib.cli import seg as cli_seg
    from DoseSegLib.cli import whatif as cli_whatif

    return [cli_patient.register, cli_dicom.register, cli_dose.register, cli_evaluation.register,
            cli_features.register, cli_run.register, cli_seg.register, cli_whatif.register,
            cli_clinic.register, cli_models.register]


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
