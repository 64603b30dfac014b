"""``doseseg export-dicom``: a run's NRRD results (dose.nrrd, segmentation) as RTDOSE and RTSTRUCT."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from DoseSegLib.cli.options import add_output
from DoseSegLib.core.options import StructureSource

if TYPE_CHECKING:
    from DoseSegLib.core.volume import Volume
    from DoseSegLib.io.dicom.deid import Deidentifier


@dataclass
class _Results:
    """What export-dicom reads from a results folder."""

    masks: dict[str, Volume]
    auto: set[str]  # the structures DoseSeg segmented (all of them without a summary.json)
    original_names: dict[str, str]
    models: dict[str, dict]


def _read_results(results: Path) -> _Results:
    """A results folder's structures, which of them DoseSeg drew, their original names and the run's models."""
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.core.names import name_from_file
    from DoseSegLib.io.patient import read_mask, read_segmentation

    seg = results / "segmentation.seg.nrrd"
    if seg.is_file():
        masks = read_segmentation(seg)
    else:
        masks = {name_from_file(f, f.name[: -len(".nrrd")]): read_mask(f)
                 for f in sorted((results / "structures").glob("*.nrrd"))}
    summary_path = results / "summary.json"
    if not summary_path.is_file():
        return _Results(masks, set(masks), {}, {})
    try:
        summary = json.loads(summary_path.read_text())
        sources = summary.get("structures", {})
        if not isinstance(sources, dict):
            raise TypeError("'structures' is not an object")
        originals = {name: name_from_file(summary_path, str(written), "original name")
                     for name, written in dict(summary.get("original_names", {})).items()}
        return _Results(masks, {name for name in masks if sources.get(name) == StructureSource.AUTO},
                        originals, dict(summary.get("models", {})))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise DoseSegError(f"{summary_path}: unreadable summary ({exc}); give the run's own summary.json") from None


def add_anonymise(parser: argparse.ArgumentParser, also: str = "") -> None:
    """``--anonymise`` and ``--key-file``: de-identify the DICOM objects written (PS3.15 Basic Profile);
    ``also`` says what else the command de-identifies or checks with the key."""
    parser.add_argument("--anonymise", action="store_true",
                        help="de-identify the DICOM objects written (PS3.15 Basic Application Level Confidentiality "
                             "Profile): keyed pseudonym for patient name and ID, UIDs replaced consistently, dates, "
                             f"names and study description removed or emptied{also}; needs --key-file")
    parser.add_argument("--key-file", type=Path,
                        help="file holding your secret (at least 16 bytes) for --anonymise's pseudonyms and UIDs: "
                             "the same key gives the same pseudonym; keep it, never share it")


def deidentifier(args: argparse.Namespace) -> Deidentifier | None:
    """The de-identifier ``--anonymise --key-file`` ask for (None without --anonymise); refuses a missing key."""
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.dicom.deid import Deidentifier, read_key

    if not args.anonymise:
        if args.key_file is not None:
            raise DoseSegError("--key-file is only used with --anonymise")
        return None
    if args.key_file is None:
        raise DoseSegError("--anonymise needs --key-file FILE holding your secret (at least 16 bytes): an unkeyed "
                           "hash of a patient ID is reversed in seconds; e.g. `head -c 32 /dev/urandom | base64 > "
                           "key.txt`, kept outside the data you share")
    return Deidentifier(read_key(args.key_file))


IDENTITY = ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID")


def _dataset_identity(ds) -> dict[str, str]:
    """Patient, study and frame of a DICOM data set (an RTSTRUCT's frame from its referenced frame)."""
    frame = ds.get("FrameOfReferenceUID") or next(
        (item.get("FrameOfReferenceUID") for item in ds.get("ReferencedFrameOfReferenceSequence", [])), "")
    return {"PatientID": str(ds.get("PatientID", "")), "StudyInstanceUID": str(ds.get("StudyInstanceUID", "")),
            "FrameOfReferenceUID": str(frame or "")}


def results_identity(results: Path) -> tuple[str, dict[str, str]] | None:
    """Where the results say which patient, study and frame they were computed for, and those values
    (their DICOM objects unless de-identified, else the DICOM patient folder summary.json names); None for
    NRRD patients. A de-identified object (``run --anonymise``) carries pseudonyms: not the CT's identity."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from DoseSegLib.io.dicom.detect import patient_format
    from DoseSegLib.io.dicom.results import read_ct_geometry

    for name in ("rtdose.dcm", "rtstruct.dcm"):
        if (results / name).is_file():
            try:
                ds = pydicom.dcmread(results / name, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError, AttributeError):
                continue
            if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
                return str(results / name), _dataset_identity(ds)
    try:
        source = Path(json.loads((results / "summary.json").read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not source.is_dir() or patient_format(source) != "dicom":
        return None
    return str(source), _dataset_identity(read_ct_geometry(source).slices[0])


def deidentified_identity(results: Path) -> tuple[str, dict[str, str]] | None:
    """The first de-identified DICOM object of the results (``run --anonymise``) and its pseudonyms."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    for name in ("rtdose.dcm", "rtstruct.dcm"):
        try:
            ds = pydicom.dcmread(results / name, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, AttributeError):
            continue
        if str(ds.get("PatientIdentityRemoved", "")).upper() == "YES":
            return str(results / name), _dataset_identity(ds)
    return None


def check_same_patient(results: Path, ct_folder: Path, series: str | None, deid: Deidentifier | None = None) -> None:
    """Refuse results computed for another patient, study or frame of reference than the CT's. Results of
    ``run --anonymise`` (pseudonyms only) are checked with the run's key (``deid``): the CT's pseudonyms must be
    theirs."""
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.dicom.results import read_ct_geometry

    plain = results_identity(results)
    found = plain or deidentified_identity(results)
    if found is None:
        return
    ct = read_ct_geometry(ct_folder, series).slices[0]
    ours = _dataset_identity(ct)
    if plain is None:  # de-identified results: compared with the CT's pseudonyms
        if deid is None:
            raise DoseSegError(f"{found[0]} is de-identified (doseseg run --anonymise): give --key-file with the "
                               f"run's key to check that the results belong to the CT in {ct_folder}")
        ours = {"PatientID": deid.identity(ct)[0], "StudyInstanceUID": deid.uid(ours["StudyInstanceUID"]),
                "FrameOfReferenceUID": deid.uid(ours["FrameOfReferenceUID"])}
    where, theirs = found
    differ = [key for key in IDENTITY if theirs[key] and ours[key] and theirs[key] != ours[key]]
    if differ:
        shown = "; ".join(f"{key} {theirs[key]} vs {ours[key]}" for key in differ)
        raise DoseSegError(f"{ct_folder}: the results in {results} belong to another patient, study or frame of "
                           f"reference than this CT ({shown}; from {where}): export them with the CT they were "
                           "computed on")


def check_dose_on_ct(dose: Volume, dose_path: Path, ct_folder: Path, series: str | None) -> None:
    """Refuse a dose none of whose dose lies on the CT (results of NRRD patients carry no DICOM identity:
    their geometry is the check left)."""
    from DoseSegLib.core.alignment import outside_fraction
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.dicom.results import read_ct_geometry

    grid = read_ct_geometry(ct_folder, series).grid
    if dose.array.any() and outside_fraction(dose.with_array(dose.array > 0), grid) >= 1:
        raise DoseSegError(f"{dose_path}: no dose lies on the CT in {ct_folder} (results of another patient, or "
                           "another frame of reference): export them with the CT they were computed on")


def cmd_export_dicom(args: argparse.Namespace) -> None:
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.dicom.carry import plan_rois
    from DoseSegLib.io.dicom.detect import patient_format
    from DoseSegLib.io.dicom.results import read_dicom_target, write_dicom_dose, write_dicom_structures, write_roi_plan
    from DoseSegLib.io.dicom.seg import seg_available, write_dicom_seg
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import read_dose

    from DoseSegLib.io.dicom.deid import Deidentifier, read_key

    check_output_dir(args.output, args.force, [args.results, args.ct])
    # --key-file alone: the key that checks the patient of de-identified results (run --anonymise)
    key = Deidentifier(read_key(args.key_file)) if args.key_file is not None and not args.anonymise else None
    deid = deidentifier(args) if key is None else None
    if not args.results.is_dir():
        raise DoseSegError(f"{args.results}: results folder not found")
    if not args.ct.is_dir() or patient_format(args.ct) != "dicom":
        raise DoseSegError(f"{args.ct}: not a folder of DICOM files (the CT series the results belong to)")
    check_same_patient(args.results, args.ct, args.series, key or deid)
    dose_path = args.results / "dose.nrrd"
    dose = read_dose(dose_path) if dose_path.is_file() else None
    if dose is not None:
        check_dose_on_ct(dose, dose_path, args.ct, args.series)
    results = _read_results(args.results)
    auto = {name: mask for name, mask in results.masks.items() if name in results.auto}
    if dose is None and not auto and not (args.all_structures and results.masks):
        raise DoseSegError(f"{args.results}: neither dose.nrrd nor auto-segmented structures to export")
    target = read_dicom_target(args.ct, args.series, deid)
    rois = plan_rois(results.masks, results.auto, results.original_names, target.ct, target.structure_set,
                     results.models) if args.all_structures else None
    with staged_output(args.output, args.force, [args.results, args.ct]) as out:
        written = [write_dicom_dose(out / "rtdose.dcm", target, dose)] if dose is not None else []
        if rois is not None and rois.contours:
            written.append(write_roi_plan(out / "rtstruct.dcm", target, rois))
        elif rois is None and auto:
            written.append(write_dicom_structures(out / "rtstruct.dcm", target, auto, results.models))
        if auto and seg_available():
            written.append(write_dicom_seg(out / "seg.dcm", target, auto, results.models))
    print(f"wrote {', '.join(str(args.output / p.name) for p in written)}")
    if auto and not seg_available():
        print("no seg.dcm: highdicom is not installed (pip install highdicom)")
    if rois is not None and rois.copied:
        print(f"copied as drawn from {target.structure_set}: {', '.join(rois.copied)}")


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
                   help="export every structure, not only the auto-segmented ones: the clinician's keep their "
                        "original names, types, colours and MANUAL generation (contours copied as drawn from the "
                        "CT folder's RTSTRUCT when they match), the body included; DoseSeg's are AUTOMATIC")
    add_anonymise(p, "; --key-file alone: checks that a de-identified run's results belong to --ct")
    add_output(p)
    p.set_defaults(func=cmd_export_dicom)
