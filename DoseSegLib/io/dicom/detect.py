"""Find the DICOM files of a patient folder by content (not by name) and index them by modality.

Choices: files that are not DICOM (a README, a .DS_Store, a PDF) are ignored with a
warning; NRRD files next to DICOM files are refused (one folder, one patient, one
format); a DICOMDIR is not needed (the folder is scanned) and is skipped; a folder
holding several patients (PatientID) is refused.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.limits import check_dicom_file

log = logging.getLogger(__name__)

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_RAW_STARTS = (b"\x08\x00", b"\x02\x00")  # a DICOM file without preamble begins with group 0008 or 0002


def sniff(path: Path) -> str:
    """'dicom', 'nrrd' or 'other' from the first bytes of a file."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return "other"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head[:2] in _RAW_STARTS and len(head) == 132:
        return "dicom"
    return "other"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def patient_format(folder: Path) -> str:
    """'dicom' or 'nrrd' for a patient folder; refuses a folder that mixes both.

    A folder with neither is reported as 'nrrd' so that the NRRD reader names the missing ct.nrrd.
    """
    kinds: dict[str, list[Path]] = defaultdict(list)
    for path in _files(folder):
        kinds[sniff(path)].append(path)
    if kinds["dicom"] and kinds["nrrd"]:
        raise DoseSegError(
            f"{folder}: holds both NRRD files ({kinds['nrrd'][0].name}, ...) and {len(kinds['dicom'])} DICOM files; "
            "a patient folder holds one patient in one format: move the DICOM files into a folder of their own"
        )
    return "dicom" if kinds["dicom"] else "nrrd"


def dicom_location(path: Path) -> tuple[Path, str | None]:
    """A DICOMDIR or one file of a patient given as the patient: its folder, and the CT series to read (a CT
    slice's own; None for an RT object or another file, whose folder is read as a whole)."""
    if path.name.upper() == "DICOMDIR":
        return path.parent, None
    header = read_header(path) if sniff(path) == "dicom" else None
    if header is None:
        raise DoseSegError(f"{path}: not a patient folder, a DICOMDIR or a DICOM file")
    modality = str(header.get("Modality", "")).upper()
    if modality != "CT":
        log.warning("%s: a%s %s file, not a CT slice: reading the patient folder %s", path,
                    "n" if modality[:1] in "AEIOR" else "", modality or "DICOM", path.parent)
        return path.parent, None
    return path.parent, str(header.get("SeriesInstanceUID", "")) or None


@dataclass
class DicomIndex:
    """The DICOM headers of a folder (read without pixel data), grouped by modality."""

    folder: Path
    by_modality: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    ignored: list[Path] = field(default_factory=list)

    def of(self, modality: str) -> list:
        return self.by_modality.get(modality, [])


_NO_PIXELS = ("1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.481.5")  # RTSTRUCT, RTPLAN


def check_complete(ds, path: Path) -> None:
    """Refuse a truncated structure set or plan (pydicom drops what the file lacks without a word, and a
    plan without its DoseReferenceSequence loses its prescriptions)."""
    meta = getattr(ds, "file_meta", None)
    sop = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if sop not in _NO_PIXELS:
        return
    ends = [e.value_tell + e.length for e in ds._dict.values()
            if getattr(e, "value_tell", None) is not None and e.length != 0xFFFFFFFF]
    size = path.stat().st_size
    if ends and max(ends) != size:
        raise DoseSegError(f"{path}: truncated or damaged DICOM file ({size} bytes, its last element ends at "
                           f"byte {max(ends)}); export it again")


def read_header(path: Path):
    """A file's DICOM header (no pixel data), or None when it is not a DICOM object."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    check_dicom_file(path)  # size limits before pydicom reads or inflates anything
    try:
        with warnings.catch_warnings():  # damaged values are judged below, not printed
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return None
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DoseSegError(f"{path}: damaged DICOM file ({type(exc).__name__}: {str(exc)[:120]})") from None
    try:  # every value decoded now, nested sequences included, so that a damaged one is named here and nowhere deeper
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_complete(ds, path)  # on the raw elements, before decoding
            for _ in getattr(ds, "file_meta", ()):
                pass
            ds.walk(lambda _dataset, _element: None)
    except DoseSegError:
        raise
    except Exception as exc:  # pydicom raises many types for damaged values
        reason = (str(exc).splitlines() or [""])[0]  # pydicom's walk() appends a traceback to the message
        raise DoseSegError(f"{path}: damaged DICOM file ({type(exc).__name__}: {reason[:120]})") from None
    if "SOPClassUID" not in ds and "MediaStorageSOPClassUID" not in getattr(ds, "file_meta", {}):
        return None
    ds.filename = str(path)
    return ds


def scan_folder(folder: Path) -> DicomIndex:
    """Index every DICOM file under ``folder`` by modality; one patient only."""
    index = DicomIndex(folder)
    for path in _files(folder):
        kind = sniff(path)
        ds = read_header(path) if kind == "dicom" else None
        if ds is None:
            index.ignored.append(path)
            continue
        sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        if sop_class == DICOMDIR_CLASS:
            continue
        index.by_modality[str(ds.get("Modality", "")).upper()].append(ds)
    if index.ignored:
        log.warning("%s: ignored %d file(s) that are not DICOM (%s)", folder, len(index.ignored),
                    ", ".join(p.name for p in index.ignored[:3]) + (", ..." if len(index.ignored) > 3 else ""))
    patients = {str(ds.get("PatientID", "")) for group in index.by_modality.values() for ds in group}
    if len(patients) > 1:
        raise DoseSegError(f"{folder}: holds files of {len(patients)} patients (PatientID); "
                           "give each patient a folder of its own")
    return index
