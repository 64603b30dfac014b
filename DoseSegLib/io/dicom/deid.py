"""De-identification of the objects DoseSeg writes: PS3.15 Basic Application Level Confidentiality Profile.

DoseSeg's RTDOSE, RTSTRUCT and SEG copy from the CT only the Patient and General Study
attributes; with a :class:`Deidentifier` each written object is then walked whole and:

- PatientName and PatientID become a keyed pseudonym, ``DS-`` + 16 hex digits of
  HMAC-SHA256(key, PatientID) (of the name, birth date and study UID when the ID is empty,
  so two patients without an ID do not collide); without the key it cannot be reversed
  or recomputed.
- Every UID that is not a standard one (SOP classes, transfer syntaxes, DICOM's own
  ``1.2.840.10008`` tree) is replaced by ``2.25.<128 bits of HMAC(key, uid)>``: the same input
  UID always gives the same new UID (within a run and between runs with one key), so the
  objects still reference each other, and nothing of the original UID is left.
- Every date, time and person name is emptied (kept as zero-length when present; ContentDate
  and ContentTime, Type 1 in a SEG, get the dummy 19000101 000000);
  PatientBirthDate, PatientSex, AccessionNumber, StudyID, ReferringPhysicianName and
  OperatorsName are Type 2 and stay, empty; StudyDescription and any other free text copied
  from the input (``REMOVED``) is removed. DoseSeg's own descriptions (SeriesDescription,
  ROI names) are kept, cleaned of the patient's ID and name parts (whole words, any case,
  replaced by ``ANON``: an ROI named after the patient; the profile's Clean Descriptors Option; every name
  group, value and part counts: ``Yamada^Tarou=山田^太郎``, ``Doe^Jane\\Roe^Janet``, ``Garcia-Lopez``).
- PatientIdentityRemoved YES, DeidentificationMethod and DeidentificationMethodCodeSequence
  (113100 Basic Application Confidentiality Profile, 113105 Clean Descriptors Option).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.version import __version__

MIN_KEY_BYTES = 16
STANDARD_UID_ROOT = "1.2.840.10008."
REMOVED = ("StudyDescription", "SeriesDate", "SeriesTime", "InstitutionName", "InstitutionAddress",
           "PatientComments", "AdditionalPatientHistory", "OtherPatientIDs", "OtherPatientNames", "PatientAge",
           "PatientWeight", "PatientSize", "PatientAddress", "IssuerOfPatientID")
EMPTIED = ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName",
           "OperatorsName")
DUMMY = {"ContentDate": "19000101", "ContentTime": "000000"}  # Type 1 in a SEG: a dummy value, not empty
_KEEP_UIDS = (0x00080016, 0x00081150, 0x00020002, 0x00020010, 0x00020012)  # class, transfer syntax, implementation
METHOD = ("PS3.15 Basic Application Level Confidentiality Profile", "Clean Descriptors Option",
          "keyed pseudonym and UIDs (HMAC-SHA256)", f"DoseSeg {__version__}")
CODES = (("113100", "Basic Application Confidentiality Profile"), ("113105", "Clean Descriptors Option"))
MIN_IDENTIFIER = 3  # shorter parts (a StudyID "1", initials) identify nobody and would blank every digit
TEXT_VRS = ("LO", "SH", "ST", "LT", "UT", "UC")  # free text: descriptors such as ROI names
ANONYMOUS = "ANON"
CJK = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def identifying_parts(value: object) -> set[str]:
    """A value and its parts long enough to identify someone: split into name groups and values (at ``=`` and
    ``\\``), components (``^``, whitespace, commas) and their parts (hyphens, dots); a group's components also
    joined (``山田太郎``, as CJK names are written). A part counts from ``MIN_IDENTIFIER`` characters, or from 2
    when it holds a CJK character (one is a syllable; a single one, like an initial, identifies nobody)."""
    text = str(value or "").strip()
    parts = {text}
    for group in re.split(r"[=\\]+", text):
        components = [c for c in re.split(r"[\^\s,]+", group) if c]
        parts |= {group, "".join(components), *components}
        parts.update(*(re.split(r"[-.]+", component) for component in components))
    return {part for part in parts if len(part) >= MIN_IDENTIFIER or (len(part) >= 2 and CJK.search(part))}


def scrub_values(text: str, values: Iterable[str], replacement: str) -> str:
    """``text`` with each of ``values`` replaced where it stands as a whole word (any case; longest first)."""
    for value in sorted(values, key=len, reverse=True):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", replacement, text, flags=re.IGNORECASE)
    return text


def read_key(path: str | Path) -> bytes:
    """The user's secret from ``path`` (at least 16 bytes); refused when missing or short."""
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise DoseSegError(f"{path}: cannot read the de-identification key ({exc.strerror})") from exc
    if len(key) < MIN_KEY_BYTES:
        raise DoseSegError(f"{path}: the de-identification key has {len(key)} bytes, at least {MIN_KEY_BYTES} "
                           "are needed (e.g. `head -c 32 /dev/urandom | base64 > key.txt`; keep it secret)")
    return key


@dataclass
class Deidentifier:
    """Keyed pseudonyms and UID replacement for one export (see the module's docstring)."""

    key: bytes
    uids: dict[str, str] = field(default_factory=dict)  # original -> new, for the record of this run

    def _digest(self, text: str) -> bytes:
        return hmac.new(self.key, text.encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str, name: str = "", birth_date: str = "", study_uid: str = "") -> str:
        """The patient's keyed pseudonym (from the ID; from name, birth date and study when there is none)."""
        source = f"id:{patient_id}" if patient_id.strip() else f"nameless:{name}|{birth_date}|{study_uid}"
        return "DS-" + self._digest(source).hex()[:16].upper()

    def uid(self, original: str) -> str:
        """The replacement of a UID: ``2.25.`` and 128 bits of its HMAC (a standard UID is kept)."""
        if not original or original.startswith(STANDARD_UID_ROOT):
            return original
        if original not in self.uids:
            self.uids[original] = f"2.25.{int.from_bytes(self._digest('uid:' + original)[:16], 'big')}"
        return self.uids[original]

    def identity(self, ds) -> tuple[str, set[str]]:
        """The pseudonym of the patient of ``ds`` (a pydicom Dataset: its objects' PatientID and PatientName) and
        the parts of its ID and name that identify the patient in free text (:func:`identifying_parts`)."""
        pseudonym = self.pseudonym(str(ds.get("PatientID", "")), str(ds.get("PatientName", "")),
                                   str(ds.get("PatientBirthDate", "")), str(ds.get("StudyInstanceUID", "")))
        return pseudonym, set().union(*(identifying_parts(ds.get(k, "")) for k in ("PatientID", "PatientName")))

    def apply(self, ds) -> None:
        """De-identify ``ds`` (a pydicom Dataset with file meta) in place."""
        from pydicom.dataset import Dataset

        pseudonym, identity = self.identity(ds)
        for keyword in REMOVED:
            if keyword in ds:
                delattr(ds, keyword)
        self._walk(ds, identity)
        for keyword in EMPTIED:
            setattr(ds, keyword, "")
        for keyword, value in DUMMY.items():
            if keyword in ds:
                setattr(ds, keyword, value)
        ds.PatientName = ds.PatientID = pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = list(METHOD)
        codes = []
        for value, meaning in CODES:
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
            codes.append(code)
        ds.DeidentificationMethodCodeSequence = codes
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    def _walk(self, ds, identity: set[str]) -> None:
        """UIDs replaced, dates, times and person names emptied, the patient's ID and name parts replaced by
        ``ANON`` in free text (an ROI named after the patient), in ``ds`` and every nested sequence."""
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    self._walk(item, identity)
            elif element.VR in TEXT_VRS and identity and element.value:
                values = element.value if element.VM > 1 else [element.value]
                clean = [scrub_values(str(v), identity, ANONYMOUS) for v in values]
                element.value = clean if element.VM > 1 else clean[0]
            elif element.VR == "UI" and element.tag not in _KEEP_UIDS:
                values = element.value if element.VM > 1 else [element.value]
                new = [self.uid(str(v)) for v in values]
                element.value = new if element.VM > 1 else new[0]
            elif element.VR in ("DA", "TM", "DT", "PN"):
                element.value = ""
