"""``doseseg export-dicom``: a run's NRRD results (dose.nrrd, segmentation) as RTDOSE and RTSTRUCT."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from DoseSegLib.cli.options import add_output
from DoseSegLib.core.options import StructureSource


def _results_structures(results: Path, all_structures: bool) -> dict:
    """The auto-segmented structures of a results folder (all of them without a summary.json or with ``all``)."""
    from DoseSegLib.io.patient import read_mask, read_segmentation

    seg = results / "segmentation.seg.nrrd"
    if seg.is_file():
        masks = read_segmentation(seg)
    else:
        masks = {f.name[: -len(".nrrd")]: read_mask(f) for f in sorted((results / "structures").glob("*.nrrd"))}
    summary = results / "summary.json"
    if all_structures or not summary.is_file():
        return masks
    sources = json.loads(summary.read_text()).get("structures", {})
    return {name: mask for name, mask in masks.items() if sources.get(name) == StructureSource.AUTO}


def cmd_export_dicom(args: argparse.Namespace) -> None:
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.dicom.detect import patient_format
    from DoseSegLib.io.dicom.results import write_dicom_results
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import DOSE_FILE, read_dose

    check_output_dir(args.output, args.force, [args.results, args.ct])
    if not args.results.is_dir():
        raise DoseSegError(f"{args.results}: results folder not found")
    if not args.ct.is_dir() or patient_format(args.ct) != "dicom":
        raise DoseSegError(f"{args.ct}: not a folder of DICOM files (the CT series the results belong to)")
    dose_path = args.results / DOSE_FILE
    dose = read_dose(dose_path) if dose_path.is_file() else None
    structures = _results_structures(args.results, args.all_structures)
    if dose is None and not structures:
        raise DoseSegError(f"{args.results}: neither dose.nrrd nor auto-segmented structures to export")
    with staged_output(args.output, args.force, [args.results, args.ct]) as out:
        written = write_dicom_results(out, args.ct, dose, structures, args.series, args.anonymise)
    print(f"wrote {', '.join(str(args.output / p.name) for p in written)}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-dicom", help="write a results folder's dose and auto-segmented OARs as RTDOSE and RTSTRUCT",
        description="Write RESULTS/dose.nrrd as rtdose.dcm and the auto-segmented structures of "
                    "RESULTS/segmentation.seg.nrrd as rtstruct.dcm, in the study and Frame of Reference of the "
                    "CT series in --ct, marked as research output (UNAPPROVED).",
    )
    p.add_argument("results", type=Path, help="a `doseseg run` (or predict-dose/segment) output folder")
    p.add_argument("--ct", type=Path, required=True, help="folder with the patient's DICOM CT series")
    p.add_argument("--series", help="SeriesInstanceUID of the CT series when the folder holds several")
    p.add_argument("--all-structures", action="store_true",
                   help="export every structure, not only the auto-segmented ones")
    p.add_argument("--anonymise", action="store_true",
                   help="patient name and ID replaced by a stable pseudonym (a hash of the ID), birth date, sex, "
                        "referring physician, accession number and study ID left out")
    add_output(p)
    p.set_defaults(func=cmd_export_dicom)
