"""``run --anonymise``: every output of the main job de-identified, not only its DICOM objects.

A patient is named in the outputs by its keyed pseudonym (``io.dicom.deid``): for a DICOM patient the one
its de-identified DICOM objects carry (from the CT's PatientID, else name, birth date and study), for an
NRRD patient folder the pseudonym of the folder's name. The per-patient output folder of a cohort, the
"patient" of summary.json and cohort_summary.csv and the report's title use it; no output names the
input's path (summary.json's "source" says the input was de-identified). In structure names, original
names, notes, warnings and errors, the input's path and the folder's name become the pseudonym, and the
patient's name and ID parts ``ANON`` (whole words, any case), as in the DICOM objects' free text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.dicom.deid import ANONYMOUS, Deidentifier, identifying_parts, scrub_values

SOURCE = "de-identified input (doseseg run --anonymise)"
REFERENCE = {True: "the patient's RTDOSE (the planned dose)",
             False: "the patient folder's dose.nrrd (taken as the planned dose)"}


@dataclass(frozen=True)
class PatientIdentity:
    """What names one patient in the outputs, and its pseudonym.

    Attributes:
        pseudonym: the keyed pseudonym (``DS-`` + 16 hex digits).
        paths: the input's path as given and resolved (its folder's, for a DICOM file).
        folder: the patient folder's name.
        parts: the name and ID parts (of the DICOM PatientName and PatientID, and of the folder's name).
    """

    pseudonym: str
    paths: tuple[str, ...]
    folder: str
    parts: frozenset[str]

    def text(self, text: str) -> str:
        """``text`` with the input's paths and folder name replaced by the pseudonym, name and ID parts by ANON."""
        for path in sorted(self.paths, key=len, reverse=True):
            text = text.replace(path, self.pseudonym)
        return scrub_values(scrub_values(text, {self.folder}, self.pseudonym), self.parts, ANONYMOUS)


def identify(deid: Deidentifier, patient: Path, series: str | None = None) -> PatientIdentity:
    """The identity of the patient folder (or DICOM file of a series) ``patient`` and its pseudonym."""
    from DoseSegLib.io.dicom.detect import patient_format
    from DoseSegLib.io.dicom.results import read_ct_geometry

    folder = patient if patient.is_dir() else patient.parent
    pseudonym, parts = deid.pseudonym(folder.name), set[str]()
    try:
        if patient_format(folder) == "dicom":
            pseudonym, parts = deid.identity(read_ct_geometry(folder, series).slices[0])
    except (DoseSegError, OSError):
        pass  # reading the patient reports what is wrong with it
    paths = {str(path) for path in (patient, patient.resolve(), folder, folder.resolve())} - {folder.name}
    return PatientIdentity(pseudonym, tuple(paths), folder.name, frozenset(parts | identifying_parts(folder.name)))


def anonymise_case(case: Case, who: PatientIdentity) -> Case:
    """``case`` named by the pseudonym, its structure names, original names and notes cleaned (a cleaned name
    that another structure already has gets ``_2``, ``_3``...)."""
    names: dict[str, str] = {}
    for name in case.structures:
        clean = candidate = who.text(name)
        number = 1
        while candidate in names.values() or (candidate != name and candidate in case.structures):
            number += 1
            candidate = f"{clean}_{number}"
        names[name] = candidate

    def renamed(values: dict) -> dict:
        return {names.get(name, who.text(name)): value for name, value in values.items()}

    return replace(case, name=who.pseudonym, structures=renamed(case.structures),
                   fine_structures=renamed(case.fine_structures), prescriptions=renamed(case.prescriptions),
                   original_names={key: who.text(text) for key, text in renamed(case.original_names).items()},
                   notes=[who.text(note) for note in case.notes])
