"""``doseseg build-cohort``: a clinic's DICOM-RT archive to a pseudonymous NRRD training cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

from DoseSegLib.cli.options import add_output, prescription

MAP_COLUMNS = (("name_as_written", "alias", "name"), ("mapped_to", "canonical"))
NOT_MAPPED = ("", "(not mapped)")


def read_names_map(path: Path) -> dict[str, str]:
    """A names map: JSON ``{"alias": "Canonical"}``, or a CSV with columns name_as_written (or alias) and
    mapped_to (or canonical), such as the cohort's own names.csv once edited; unmapped rows are skipped."""
    import csv
    import json

    from DoseSegLib.core.errors import DoseSegError

    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as exc:
            raise DoseSegError(f"{path}: cannot read the names map ({exc})") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DoseSegError(f"{path}: a JSON names map is an object of strings")
        return data
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # UTF-8 as written; a spreadsheet's BOM
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DoseSegError(f"{path}: cannot read the names map ({exc})") from exc
    header = rows[0].keys() if rows else ()
    alias, canonical = (next((c for c in choices if c in header), None) for choices in MAP_COLUMNS)
    if alias is None or canonical is None:
        raise DoseSegError(f"{path}: a CSV names map needs the columns name_as_written and mapped_to "
                           "(or alias and canonical)")
    return {row[alias]: row[canonical].strip() for row in rows
            if row[alias] and (row[canonical] or "").strip() not in NOT_MAPPED}


def check_key_file(key: Path | None, output: Path) -> None:
    """The key file is new and outside the cohort (it links pseudonyms to patients)."""
    from DoseSegLib.core.errors import DoseSegError

    if key is None:
        return
    if key.exists() or not key.parent.is_dir():
        raise DoseSegError(f"{key}: the key file must be a new file in an existing folder")
    if key.resolve().is_relative_to(output.resolve()):
        raise DoseSegError(f"{key}: the key file must lie outside the cohort folder (it identifies the patients)")


def cmd_build_cohort(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from DoseSegLib.cli.progress import progress_enabled
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.core.names import NameMapper
    from DoseSegLib.io.cohort.build import KEY_COLUMNS, CohortOptions, build_cohort, key_rows, write_cohort
    from DoseSegLib.io.dicom.archive import scan_archive
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.tables import write_csv
    from DoseSegLib.models.common.grid import training_grid_case

    for archive in args.archives:
        if not archive.exists():
            raise DoseSegError(f"{archive}: archive folder not found")
    check_output_dir(args.output, args.force, args.archives)
    check_key_file(args.key, args.output)
    mapper = NameMapper(read_names_map(args.names) if args.names else None, dict(args.prescription),
                        args.names or "names map")
    options = CohortOptions(mapper, args.validation, args.validation_fraction, args.seed,
                            tuple(args.structures) if args.structures else None, args.min_presence, args.site,
                            training_grid_case)
    studies, ignored = scan_archive(args.archives)
    if not studies:
        raise DoseSegError(f"no DICOM file under {', '.join(map(str, args.archives))}")
    with staged_output(args.output, args.force, args.archives) as out:
        patients, site = build_cohort(studies, out, options, lambda items: tqdm(
            items, total=len(studies), desc="build-cohort", unit="study", disable=not progress_enabled()))
        write_cohort(out, patients, site, mapper)
    if args.key is not None:
        write_csv(args.key, key_rows(patients), KEY_COLUMNS)
    summary = site.cohort
    print(f"wrote {args.output}: {summary['usable']} of {summary['studies']} studies usable "
          f"({summary['train']} train, {summary['validation']} validation, {summary['excluded']} excluded; "
          f"{ignored} files not DICOM or unreadable); site '{site.site}', organs {', '.join(site.oars) or 'none'}; "
          f"see cohort.csv and names.csv")
    return 0 if summary["usable"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-cohort", help="DICOM-RT archive -> pseudonymous NRRD training cohort (train/, validation/)",
        description="Scan DICOM-RT exports (any folder tree; patients grouped by PatientID and study: CT, "
                    "RTSTRUCT, RTDOSE, RTPLAN when present), map structure names, read the prescriptions and "
                    "write OUTPUT/train, OUTPUT/validation, cohort.csv (each study usable or why not), "
                    "names.csv and site.json. No file holds a patient's name, ID, dates or UIDs.")
    p.add_argument("archives", type=Path, nargs="+", metavar="ARCHIVE", help="folders of DICOM files")
    add_output(p, help="the cohort folder (must be new or empty)")
    p.add_argument("--names", type=Path, metavar="MAP",
                   help="names map: an edited names.csv (name_as_written,mapped_to) or JSON {alias: canonical}")
    p.add_argument("--prescription", type=prescription, action="append", default=[], metavar="NAME=GY",
                   help="dose of a target without an RTPLAN prescription, e.g. PTV_High=70 (repeatable)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--validation", type=int, metavar="N", help="validation patients")
    split.add_argument("--validation-fraction", type=float, default=0.2, metavar="F",
                       help="fraction of the usable patients for validation (default 0.2, at least one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of the pseudonyms' order")
    p.add_argument("--structures", nargs="+", metavar="NAME",
                   help="the site's organs (canonical names; default: those in --min-presence of the patients)")
    p.add_argument("--min-presence", type=float, default=0.25,
                   help="an organ found in this fraction of the usable patients is one of the site's (default 0.25)")
    p.add_argument("--site", help="the site's name (default: from the organs found)")
    p.add_argument("--key", type=Path, metavar="KEY.csv",
                   help="also write, OUTSIDE the cohort, the key from pseudonym to PatientID, study UID and archive "
                        "folders (to find an excluded study; keep it where the patients' records are kept)")
    p.set_defaults(func=cmd_build_cohort)
