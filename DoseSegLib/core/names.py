"""Structure names: map clinical aliases (incl. AAPM TG-263) onto DoseSeg's canonical names."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Collection, Mapping
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError

__all__ = [
    "CGY_FROM",
    "CONTROL",
    "DEFAULT_ALIASES",
    "DOSE_FROM",
    "MAX_FILENAME",
    "NAMES_TABLE",
    "NON_TARGETS",
    "PRESCRIPTION_GY",
    "NameMapper",
    "check_prescription",
    "name_from_file",
    "not_a_target",
    "parse_prescription",
    "printable_name",
    "refuse_duplicate",
    "safe_filename",
    "structure_filenames"
]

log = logging.getLogger(__name__)
NAMES_TABLE = Path(__file__).resolve().parents[1] / "data" / "structure_names.csv"
# PTV with a number: PTV70, PTV_70, PTV 56Gy, PTV_59.4, PTV_59p4, PTV_7000 (cGy), PTV1 (a number, not a dose).
_PTV = re.compile(r"^ptv[_ \-]?(\d+(?:[.p]\d+)?)(?:c?gy)?$")
CGY_FROM = 100.0  # a number this large in a target name is cGy
DOSE_FROM = 10.0  # smaller numbers (PTV1, PTV2) number the targets: they are not doses


# C0 and C1 control characters (newline, tab, NUL, ...), DEL and Unicode's line and paragraph separators: in a
# name they break every line-based file (a NRRD header line, notes.txt) and DICOM forbids them in an ROIName (LO).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PADDING = re.compile(r"^[\s\x00]+|[\s\x00]+$")  # a NRRD reader drops a value's spaces at both ends
CONTROL_STAND_IN = "_"


def printable_name(name: str) -> str:
    """``name`` without the spaces and NULs at its ends and with each control character inside it (newline,
    tab, NUL, other C0/C1 controls, line separators) replaced by ``_``: the form in which every structure name
    enters DoseSeg, so that every output (a NRRD header line, a table row, an ROIName) holds it as read."""
    return CONTROL.sub(CONTROL_STAND_IN, _PADDING.sub("", name))


def shown_name(name: str) -> str:
    """``name`` for a message: its control characters escaped (``PTV\\nHigh``), other characters as they are."""
    return CONTROL.sub(lambda match: repr(match.group(0))[1:-1], name)


def name_from_file(where: str | Path, name: str, what: str = "structure name") -> str:
    """A name read from ``where`` in the form DoseSeg keeps (:func:`printable_name`), with a warning naming the
    file and the name when a control character had to be replaced."""
    printable = printable_name(name)
    if printable == name:
        return name
    where, shown = shown_name(str(where)), shown_name(name)  # a file's name may hold a newline too
    if not printable:
        raise DoseSegError(f"{where}: {what} '{shown}' has no printable character; rename it")
    log.warning("%s: %s '%s' has control characters (newline, tab, NUL, ...) or spaces at its ends: read as "
                "'%s'; rename it in the file to choose the name yourself", where, what, shown, printable)
    return printable


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _load_table(path: Path = NAMES_TABLE) -> dict[str, str]:
    """``{alias key: canonical}`` from the shipped table (TG-263 head-and-neck names and common variants)."""
    aliases = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for alias in (row["canonical"], row["tg263"], *row["aliases"].split("|")):
                if alias.strip():
                    aliases[_key(alias)] = row["canonical"]
    return aliases


DEFAULT_ALIASES: dict[str, str] = _load_table()
NON_TARGETS = frozenset(DEFAULT_ALIASES.values())  # the table's canonical names: organs at risk and the body


def in_names_table(name: str) -> bool:
    """Whether ``name`` is one of the names table's organs or body (any alias) or a target named with a number
    (``PTV70``, ``PTV_1``): a name the models, goals and intervals go by."""
    return _key(name) in DEFAULT_ALIASES or bool(_PTV.match(name.lower().strip()))


def not_a_target(canonical: str) -> str | None:
    """What a structure the names table knows is, when it is not a target ("an organ at risk"), else None."""
    if canonical not in NON_TARGETS:
        return None
    return "the body outline" if canonical == "Body" else "an organ at risk"


PRESCRIPTION_GY = (1.0, 120.0)  # a target dose outside this range is a typo, cGy, or not a dose


def check_prescription(value: object, source: str) -> float:
    """A target dose in Gy, refused outside 1-120 Gy: the one check for every source (a target's name,
    ``--prescription``, an RTPLAN, the Python API).

    Args:
        value: the dose as given (a number or text).
        source: where it comes from, for the message (e.g. ``--prescription PTV_High``, a file).
    """
    try:
        gy = float(value) if not isinstance(value, bool) else math.nan  # type: ignore[arg-type]
    except (TypeError, ValueError):
        gy = math.nan
    low, high = PRESCRIPTION_GY
    if not low <= gy <= high:
        raise DoseSegError(f"{source}: prescription {value!r} is not a dose from {low:g} to {high:g} Gy "
                           "(give Gy: 7000 cGy is 70 Gy)")
    return gy


def parse_prescription(text: str) -> tuple[str, float]:
    """``NAME=GY`` -> (NAME, Gy), e.g. ``PTV_High=70``."""
    name, sep, value = text.rpartition("=")
    if not sep or not name.strip():
        raise DoseSegError(f"--prescription '{text}': expected NAME=GY, e.g. PTV_High=70")
    return name.strip(), check_prescription(value.strip(), f"--prescription {name.strip()}")


class NameMapper:
    """Maps structure names to canonical ones; unknown names are returned unchanged.

    Args:
        extra: additional ``{alias: canonical}`` pairs, taking precedence over the defaults.
        prescriptions: ``{target name: Gy}`` set explicitly (``--prescription``); they override
            any dose read from a target's name. Names are mapped like structure names.
        source: where ``extra`` comes from, for warnings (a control character in a name it maps to is
            replaced, see :func:`printable_name`).
    """

    def __init__(self, extra: Mapping[str, str] | None = None,
                 prescriptions: Mapping[str, float] | None = None, source: str | Path = "names map") -> None:
        if not isinstance(extra or {}, Mapping) or not isinstance(prescriptions or {}, Mapping):
            raise DoseSegError("NameMapper: extra and prescriptions must be mappings ({'alias': 'Name'}, {'PTV': Gy})")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in (extra or {}).items()):
            raise DoseSegError("NameMapper: extra aliases must map names to names (strings)")
        self.aliases = dict(DEFAULT_ALIASES)
        self.aliases.update({_key(k): name_from_file(source, v, f"name for '{shown_name(k)}'")
                             for k, v in (extra or {}).items()})
        self.prescriptions = self._target_doses(prescriptions or {})

    def _target_doses(self, prescriptions: Mapping[str, float]) -> dict[str, float]:
        """Explicit target doses by canonical name, each checked; an organ at risk is refused."""
        if not isinstance(prescriptions, Mapping):
            raise DoseSegError("prescriptions must be a mapping {'PTV': Gy}")
        doses = {}
        for name, gy in prescriptions.items():
            canonical = self.canonical(str(name))
            what = not_a_target(canonical)
            if what:
                shown = canonical if canonical == str(name) else f"{name} ({canonical})"
                raise DoseSegError(f"{shown} is {what}, not a target: --prescription gives target doses")
            doses[canonical] = check_prescription(gy, f"prescription of {name}")
        return doses

    @classmethod
    def from_json(cls, path: str | Path, prescriptions: Mapping[str, float] | None = None) -> NameMapper:
        """Load extra aliases from a JSON object ``{"alias": "CanonicalName", ...}``."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DoseSegError(f"{path}: cannot read name mapping ({exc})") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DoseSegError(f"{path}: name mapping must be a JSON object of strings")
        return cls(data, prescriptions, path)

    def with_prescriptions(self, prescriptions: Mapping[str, float]) -> NameMapper:
        """The same aliases with these explicit target doses (Gy) added (their names mapped by these aliases)."""
        mapper = NameMapper()
        mapper.aliases = self.aliases
        mapper.prescriptions = {**self.prescriptions, **mapper._target_doses(prescriptions)}
        return mapper

    def note(self, name: str) -> str | None:
        """What the mapping had to interpret in ``name`` (a cGy number in a target name), for the outputs."""
        match = None if _key(name) in self.aliases else _PTV.match(name.lower().strip())
        level = float(match.group(1).replace("p", ".")) if match else 0.0
        return f"target '{name}': {level:g} read as cGy ({level / 100:g} Gy)" if level >= CGY_FROM else None

    def match(self, name: str, among: Collection[str]) -> str:
        """The canonical name of ``name``; when that is none of ``among`` (the structures), the one structure
        whose name equals it ignoring case, spaces and punctuation (``PTV HIGH`` is ``PTV_High``)."""
        canonical = self.canonical(name)
        if canonical in among:
            return canonical
        same = [n for n in among if _key(n) in (_key(name), _key(canonical))]
        return same[0] if len(same) == 1 else canonical

    def read(self, where: str | Path, given: str, seen: dict[str, str], fix: str = "rename one") -> tuple[str, str]:
        """A structure's name read from ``where`` (every reader's one step): the name as given made printable
        (:func:`name_from_file`) and its canonical name; refuses a second structure of one canonical name.

        Args:
            seen: canonical name -> name as given, of the structures read so far; this one is added.
            fix: what the user can do about two structures of one name.
        """
        printable = name_from_file(where, given)
        name = self.canonical(printable)
        refuse_duplicate(where, printable, name, seen, fix)
        seen[name] = printable
        return printable, name

    def canonical(self, name: str) -> str:
        """The canonical name: an alias's canonical name, ``PTV<Gy>`` for a target named with a dose; a name
        is first made printable (:func:`printable_name`)."""
        name = printable_name(name)
        key = _key(name)
        if key in self.aliases:
            return self.aliases[key]
        match = _PTV.match(name.lower().strip())
        if not match:
            return name
        level = float(match.group(1).replace("p", "."))
        if level >= CGY_FROM:
            log.info("%s", self.note(name))
            return f"PTV{level / 100:g}"
        return f"PTV{level:g}"  # below 10 a number, not a dose: see case.target_prescription

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_FILENAME = 80


def refuse_duplicate(where: str | Path, original: str, name: str, seen: Mapping[str, str],
                     fix: str = "remove one, or rename it") -> None:
    """Refuse a second structure whose name maps to ``name`` (the one wording of every reader).

    Args:
        where: the file being read (named in the message).
        original: the structure's name as given.
        seen: canonical name -> name as given, of the structures read so far.
        fix: what the user can do.
    """
    if name in seen:
        raise DoseSegError(f"{where}: '{original}' and '{seen[name]}' both map to structure '{name}' ({fix})")


def _digest(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_filename(name: str) -> str:
    """A structure name as a plain file-name stem: never a path, never hidden, at most MAX_FILENAME bytes.

    Separators, control characters and characters Windows refuses become ``_``; leading
    dots and spaces are dropped (no ``..``, no hidden files); reserved device names get a
    ``_`` prefix; a name that had to be changed or shortened ends with ``~`` and 8 hex
    digits of its sha256, so that two distinct names never share a file.
    """
    stem = _UNSAFE.sub("_", name).lstrip(". ").rstrip(". ")
    if stem.split(".")[0].rstrip(" ").lower() in _RESERVED:
        stem = f"_{stem}"
    if stem and stem == name and _bytes(stem) <= MAX_FILENAME and "~" not in stem:
        return stem
    return f"{_cut(stem, MAX_FILENAME - 9) or 'structure'}~{_digest(name)}"


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _cut(text: str, size: int) -> str:
    """``text`` shortened to at most ``size`` bytes of UTF-8, never inside a character."""
    while _bytes(text) > size:
        text = text[:-1]
    return text.rstrip(". ")


def structure_filenames(names: list[str] | tuple[str, ...] | dict) -> dict[str, str]:
    """``{name: "<safe stem>.nrrd"}`` for every name; refuses names whose files would collide.

    Distinct names get distinct files, also on case-insensitive file systems (macOS, Windows).
    """
    files: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        file = f"{safe_filename(name)}.nrrd"
        if file.lower() in seen:
            file = f"{_cut(safe_filename(name), MAX_FILENAME - 9)}~{_digest(name)}.nrrd"
        if file.lower() in seen:
            raise DoseSegError(f"structures '{seen[file.lower()]}' and '{name}' would share the file {file}")
        seen[file.lower()] = name
        files[name] = file
    return files
