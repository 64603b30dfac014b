"""A DICOM-RT archive (any folder tree, any number of patients) split into one file list per patient study.

Files are found by content (see ``detect.sniff``), grouped by PatientID and StudyInstanceUID, and
each group is shown to the one-patient reader (``reader.read_dicom_patient``) as a folder of links
with neutral names, so that its messages name no original path. The identifiers of each group are
kept in memory only, to scrub them from any message written out (:func:`scrub`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.dicom.deid import identifying_parts, scrub_values
from DoseSegLib.io.dicom.detect import DICOMDIR_CLASS, read_header, sniff
from DoseSegLib.io.limits import check_dicom_file

log = logging.getLogger(__name__)
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")  # a DICOM UID: dotted digits (at least 4 components)
_IDENTIFYING = ("PatientID", "PatientName", "PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate",
                "ContentDate", "AccessionNumber", "StudyID", "InstitutionName", "ReferringPhysicianName")


@dataclass
class ArchiveStudy:
    """The DICOM files of one patient's study, and the identifying values to keep out of any output."""

    patient_id: str
    study_uid: str
    files: list[Path] = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)
    modalities: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, path: Path, ds) -> None:
        self.files.append(path)
        self.modalities[str(ds.get("Modality", "")).upper()] += 1
        for keyword in _IDENTIFYING:
            self.identifiers.update(identifying_parts(ds.get(keyword, "")))


def scan_archive(roots: Iterable[Path]) -> tuple[list[ArchiveStudy], int]:
    """Every patient study under ``roots`` (files read by header only), and the count of files that are not DICOM
    (or too damaged to tell their study).

    A study without PatientID or StudyInstanceUID is grouped under the empty value (and later
    refused by the reader if it does not form one patient). A damaged file never stops the scan:
    it stays in its study when its PatientID and StudyInstanceUID can be read (the reader then
    excludes that study, naming the damage), else it is left out with a warning.
    """
    studies: dict[tuple[str, str], ArchiveStudy] = {}
    ignored = 0
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            try:
                ds = read_header(path) if sniff(path) == "dicom" else None
            except DoseSegError as exc:
                key = _damaged_key(path)
                if key is None:
                    log.warning("skipped (its study cannot be told): %s", exc)
                    ignored += 1
                else:
                    studies.setdefault(key, ArchiveStudy(*key)).files.append(path)
                continue
            if ds is None:
                ignored += not path.name.startswith(".")
                continue
            if str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
                continue
            key = (str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")))
            studies.setdefault(key, ArchiveStudy(*key)).add(path, ds)
    return list(studies.values()), ignored


def _damaged_key(path: Path) -> tuple[str, str] | None:
    """PatientID and StudyInstanceUID of a damaged DICOM file, when they can be read (within the size limits)."""
    import pydicom

    try:
        check_dicom_file(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                 specific_tags=["PatientID", "StudyInstanceUID"])
            key = (str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", "")))
    except Exception:  # pydicom raises many types for damaged files: then the study is unknown
        return None
    return key if any(key) else None


def study_view(study: ArchiveStudy, folder: Path) -> Path:
    """``folder`` filled with links (copies where links are not allowed) to the study's files, named f00001.dcm..."""
    folder.mkdir(parents=True)
    for number, path in enumerate(study.files, start=1):
        link = folder / f"f{number:05d}.dcm"
        try:
            os.symlink(path.resolve(), link)
        except OSError:  # no symlinks (Windows without developer mode): a copy reads the same
            shutil.copyfile(path, link)
    return folder


def scrub(text: str, study: ArchiveStudy, view: Path | None = None) -> str:
    """``text`` without the study's identifiers, UIDs and the view folder's path (for messages written out)."""
    if view is not None:
        text = text.replace(f"{view}{os.sep}", "").replace(str(view), "the patient")
    return scrub_values(_UID.sub("<UID>", text), study.identifiers, "<ID>")
