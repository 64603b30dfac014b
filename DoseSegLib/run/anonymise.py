"""``run --anonymise``: every output of the main job de-identified, not only its DICOM objects.

A patient is named in the outputs by its keyed pseudonym (``io.dicom.deid``): for a DICOM patient the one
its de-identified DICOM objects carry (from the CT's PatientID, else name, birth date and study), for an
NRRD patient folder the pseudonym of the folder's name. The per-patient output folder of a cohort, the
"patient" of summary.json and cohort_summary.csv and the report's title use it; no output names the
input's path (summary.json's "source" says the input was de-identified). In structure names, original
names, notes, warnings and errors, the input's path and the folder's name become the pseudonym, the
patient's name and ID parts ``ANON`` (whole words, any case), as in the DICOM objects' free text, and the names
of the files and folders inside the patient folder ``<file>`` (a stray ``Doe_1944-01-01_MRN-1234.pdf``).

Everything is computed on the case as read: the de-identification renames the results afterwards
(``anonymise_result``), so the dose, DVHs and goals are the same with and without ``--anonymise``. A folder name
that is short or a number (``1``, ``001``) is replaced only where it stands as a whole text, its numeric parts
never; placeholder words (``Test^Patient``) are not identifiers; a part that is a structure name of the names
table (``Brainstem``, ``PTV70``), or a folder part that a structure of the case is named (``Prostate`` of the
folder ``Prostate 3``), is not scrubbed: the structure keeps its name and a warning says so.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import in_names_table
from DoseSegLib.io.dicom.deid import ANONYMOUS, MIN_IDENTIFIER, Deidentifier, identifying_parts, scrub_values
from DoseSegLib.io.patient import CT_FILE, DOSE_FILE, POSSIBLE_DOSE_FILE
from DoseSegLib.run.results import PatientResult

SOURCE = "de-identified input (doseseg run --anonymise)"
REFERENCE = {True: "the patient's RTDOSE (the planned dose)",
             False: "the patient folder's dose.nrrd (taken as the planned dose)"}
FILE = "<file>"
LAYOUT = frozenset({CT_FILE, DOSE_FILE, POSSIBLE_DOSE_FILE})  # DoseSeg's names, not the user's
PLACEHOLDERS = frozenset({"patient", "test", "anonymous", "anon", "unknown", "phantom", "demo", "name", "none"})
T = TypeVar("T")


@dataclass(frozen=True)
class PatientIdentity:
    """What names one patient in the outputs, and its pseudonym.

    Attributes:
        pseudonym: the keyed pseudonym (``DS-`` + 16 hex digits).
        paths: the input's path as given and resolved (its folder's, for a DICOM file).
        folder: the patient folder's name ("" once kept as a structure's name).
        parts: the name and ID parts (of the DICOM PatientName and PatientID, and of the folder's name).
        files: the names and relative paths of the files and folders inside the patient folder (a stray
            ``Doe_1944-01-01_MRN-1234.pdf`` names the patient): ``<file>`` in every text.
    """

    pseudonym: str
    paths: tuple[str, ...]
    folder: str
    parts: frozenset[str]
    files: frozenset[str] = frozenset()

    def text(self, text: str) -> str:
        """``text`` with the input's paths and folder name replaced by the pseudonym, name and ID parts by ANON;
        a short or numeric folder name only where it is the whole text; the names of the files in the folder by
        ``<file>``."""
        for name in sorted(self.files, key=len, reverse=True):  # a whole name, or a path's last parts
            text = re.sub(rf"(?<![^\s/\\(,'\"]){re.escape(name)}(?=$|[\s)\\/,;:'\"]|\.(?:\s|$))", FILE, text)
        for path in sorted(self.paths, key=len, reverse=True):
            text = text.replace(path, self.pseudonym)
        if self.folder and _weak(self.folder):
            text = self.pseudonym if text.strip() == self.folder else text
        elif self.folder:
            text = scrub_values(text, {self.folder}, self.pseudonym)
        return scrub_values(text, self.parts, ANONYMOUS)

    def keeping(self, structures: list[str]) -> tuple[PatientIdentity, list[str]]:
        """This identity without the parts that are names of the names table, or folder parts that one of
        ``structures`` is named (any case), and a warning for each such part kept."""
        own = {name.lower() for name in structures}
        from_folder = {part.lower() for part in {self.folder, *identifying_parts(self.folder)}}
        kept = {part for part in {self.folder, *self.parts} if part and (
            in_names_table(part) or (part.lower() in from_folder and part.lower() in own))}
        warnings = [f"--anonymise: '{part}' of the patient's name, ID or folder is also a structure name (of the "
                    "names table or of this case): kept as it is in the outputs" for part in sorted(kept)]
        folder = "" if self.folder in kept else self.folder
        return replace(self, folder=folder, parts=self.parts - kept), warnings


def _weak(part: str) -> bool:
    """A folder name or part too short, or only a number, to be scrubbed inside other text."""
    return len(part) < MIN_IDENTIFIER or part.isdigit()


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
    parts |= {part for part in identifying_parts(folder.name) if not _weak(part)}
    return PatientIdentity(pseudonym, tuple(paths), folder.name,
                           frozenset(part for part in parts if part.lower() not in PLACEHOLDERS), _files(folder))


def _files(folder: Path) -> frozenset[str]:
    """The names and paths relative to ``folder`` of everything inside it (none when it cannot be listed), but
    the names of DoseSeg's patient folder layout (``ct.nrrd``...)."""
    try:
        inside = [path.relative_to(folder) for path in folder.rglob("*")]
    except OSError:
        return frozenset()
    return frozenset({str(path) for path in inside} | {path.name for path in inside}) - LAYOUT


def clean_names(names: list[str], who: PatientIdentity) -> tuple[dict[str, str], list[str]]:
    """The de-identified name of each of ``names`` (a cleaned name that another structure already has gets
    ``_2``, ``_3``..., so that no cleaned name is another's original name); a name of the names table is never
    changed, with a warning when it would have been."""
    clean: dict[str, str] = {}
    warnings = []
    for name in names:
        candidate = base = who.text(name)
        if candidate != name and in_names_table(name):
            warnings.append(f"--anonymise: the structure {name} keeps its name (a name of the names table), "
                            "although it matches the patient's name, ID or folder")
            candidate = base = name
        number = 1
        while candidate in clean.values() or (candidate != name and candidate in names):
            number += 1
            candidate = f"{base}_{number}"
        clean[name] = candidate
    return clean, warnings


def anonymise_case(case: Case, who: PatientIdentity) -> Case:
    """``case`` named by the pseudonym, its structure names, original names and notes cleaned."""
    return _anonymised_case(case, clean_names(list(case.structures), who)[0], who)


def _anonymised_case(case: Case, names: dict[str, str], who: PatientIdentity) -> Case:
    def renamed(values: dict) -> dict:
        return {names.get(name, who.text(name)): value for name, value in values.items()}

    return replace(case, name=who.pseudonym, structures=renamed(case.structures),
                   fine_structures=renamed(case.fine_structures), prescriptions=renamed(case.prescriptions),
                   original_names={key: who.text(text) for key, text in renamed(case.original_names).items()},
                   notes=[who.text(_named(note, names)) for note in case.notes])


def _named(text: str, names: dict[str, str]) -> str:
    """``text`` with each structure name of ``names`` standing as a whole (case as written) renamed in one pass:
    the notes name ``PTV_ANON`` and ``PTV_ANON_2`` as the outputs do, not both ``PTV_ANON`` once scrubbed."""
    if not names:
        return text
    pattern = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.sub(rf"(?<![A-Za-z0-9_])(?:{pattern})(?![A-Za-z0-9_])", lambda match: names[match.group()], text)


def _renamed(value: T, names: dict[str, str]) -> T:
    """``value`` with every string equal to one of ``names`` (keys and values of its dicts, items of its lists,
    fields of its dataclasses) renamed; arrays and other objects are shared, not copied."""
    out: object = value
    if isinstance(value, str):
        out = names.get(value, value)
    elif isinstance(value, dict):
        out = {_renamed(key, names): _renamed(item, names) for key, item in value.items()}
    elif isinstance(value, list):
        out = [_renamed(item, names) for item in value]
    elif isinstance(value, tuple) and not hasattr(value, "_fields"):  # a named tuple is left as it is
        out = tuple(_renamed(item, names) for item in value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = copy.copy(value)
        for field in dataclasses.fields(value):
            object.__setattr__(out, field.name, _renamed(getattr(value, field.name), names))
    return out  # type: ignore[return-value]


def anonymise_result(result: PatientResult, who: PatientIdentity) -> tuple[PatientResult, PatientIdentity]:
    """``result``, computed on the case as read, with its structures renamed as ``clean_names`` does everywhere
    (DVHs, metrics, goals, comparison, radiomics, intervals...) and the patient named by the pseudonym; and the
    identity that cleans its texts (without the parts kept as structure names, see ``PatientIdentity.keeping``);
    its notes name the structures by their new names and are cleaned.
    """
    who, warnings = who.keeping(list(result.case.structures))
    names, unchanged = clean_names(list(result.case.structures), who)
    live = result.warnings  # still collecting (what writing the outputs logs)
    live += [*warnings, *unchanged]
    result = _renamed(replace(result, case=_anonymised_case(result.case, names, who)),
                      {name: clean for name, clean in names.items() if clean != name})  # no chain: see clean_names
    result.name, result.warnings = who.pseudonym, live
    result.notes = [who.text(_named(note, names)) for note in result.notes]
    return result, who
