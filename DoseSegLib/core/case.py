"""A patient: CT, named structures and optional dose, possible-dose mask and prescription."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import CGY_FROM, DOSE_FROM, check_prescription, name_from_file, printable_name, shown_name
from DoseSegLib.core.volume import Volume

__all__ = ["MIN_PRIMARY_CC", "OARS", "TARGET_PATTERN", "TARGET_PREFIXES", "Case", "PrimaryTarget", "chosen_target",
           "is_ptv", "looks_like_target", "primary_prescription", "primary_target", "target_prescription"]

OARS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TARGET_PATTERN = re.compile(r"^PTV(\d+(?:\.\d+)?)$")
TARGET_PREFIXES = ("CTV", "GTV", "ITV", "PTV")  # names that look like a target volume, prescribed or not


def target_prescription(name: str) -> float | None:
    """Prescription in Gy of a canonical target name such as ``PTV70``, else None.

    Numbers below 10 (``PTV1``, ``PTV2``) number targets and are not doses; cGy numbers are
    converted by ``NameMapper.canonical`` before (``PTV_7000`` becomes ``PTV70``).
    """
    match = TARGET_PATTERN.match(name)
    level = float(match.group(1)) if match else None
    return level if level is not None and DOSE_FROM <= level < CGY_FROM else None


def is_ptv(name: str) -> bool:
    """A planning target volume by its (canonical) name: one starting with ``PTV`` (``PTV70``, ``PTV1``,
    ``PTV_High``, ``ptv low``), not one merely containing it (``zPTV_ring``, ``CTV_PTV70``: helper or other
    volumes). The targets known by name, and the ones :func:`primary_target` prefers on ties."""
    return name.upper().startswith("PTV")


def looks_like_target(name: str) -> bool:
    """A (canonical) name that looks like a target volume: starting with CTV, GTV, ITV or PTV, or containing PTV
    (``CTV70``, ``GTV``, ``zPTV70_opt``). Without a prescription such a structure is neither a known target nor an
    organ (:attr:`Case.unprescribed_targets`)."""
    upper = name.upper()
    return upper.startswith(TARGET_PREFIXES) or "PTV" in upper


@dataclass
class Case:
    """One patient's images. Structure masks are boolean volumes.

    ``fine_structures`` holds, after alignment, the structures that were given finer than the
    CT grid, on their own grids: the DVH samples them there (partial volume). ``original_names``
    gives a structure's name as in its file, by canonical name.
    """

    name: str
    ct: Volume
    structures: dict[str, Volume] = field(default_factory=dict)
    dose: Volume | None = None
    possible_dose_mask: Volume | None = None
    prescription: float | None = None
    source: Path | None = None
    fine_structures: dict[str, Volume] = field(default_factory=dict)
    original_names: dict[str, str] = field(default_factory=dict)
    prescriptions: dict[str, float] = field(default_factory=dict)  # target -> Gy (RTPLAN, then --prescription)
    dicom_series: str | None = None  # SeriesInstanceUID of the CT when read from DICOM (outputs reference it)
    notes: list[str] = field(default_factory=list)  # what reading the names interpreted, for the outputs

    def __post_init__(self) -> None:
        where = f"patient '{self.name}'"
        self._printable_names(where)
        if self.prescription is not None:
            self.prescription = check_prescription(self.prescription, where)
        if not isinstance(self.prescriptions, dict):
            raise DoseSegError(f"{where}: prescriptions must be a dict of target name -> Gy")
        self.prescriptions = {name: check_prescription(gy, f"{where}: prescription of {name}")
                              for name, gy in self.prescriptions.items()}

    def _printable_names(self, where: str) -> None:
        """Structure names in the form every reader gives them (:func:`names.printable_name`: no newline, tab,
        NUL, ...), also for a Case built in Python, with a warning; two names that become one are refused."""
        self.structures = _printable_keys(self.structures, where)
        self.prescriptions = _printable_keys(self.prescriptions, where)
        self.fine_structures = _printable_keys(self.fine_structures, where, warn=False)
        if isinstance(self.original_names, dict) and not all(map(_printable, self.original_names.values())):
            self.original_names = {key: name_from_file(where, value) if isinstance(value, str) else value
                                   for key, value in self.original_names.items()}

    @property
    def target_names(self) -> list[str]:
        """Every target structure, whether its dose is known or not."""
        return [n for n in self.structures if is_ptv(n) or n in self.prescriptions]

    @property
    def targets(self) -> dict[str, float]:
        """Targets whose prescription is known (explicit, else from the name) in Gy, highest first."""
        found = {n: self.prescriptions.get(n, target_prescription(n)) for n in self.target_names}
        targets = {n: p for n, p in found.items() if p is not None}
        return dict(sorted(targets.items(), key=lambda item: -item[1]))

    @property
    def unmatched_prescriptions(self) -> dict[str, float]:
        """Prescriptions (an RTPLAN's dose references) naming no structure of the case."""
        return {n: gy for n, gy in self.prescriptions.items() if n not in self.structures}

    @property
    def unknown_targets(self) -> list[str]:
        """Targets whose dose is not known: never guessed (give it with ``--prescription NAME=GY``)."""
        return [n for n in self.target_names if n not in self.targets]

    @property
    def unprescribed_targets(self) -> list[str]:
        """Structures that look like targets (:func:`looks_like_target`) with no known prescription: no organ
        interval, no plan-QA verdict (an organ-sparing verdict on a CTV would be wrong)."""
        return [n for n in self.structures if looks_like_target(n) and n not in self.targets]

    def unprescribed_warning(self) -> str | None:
        """The warning naming :attr:`unprescribed_targets`, or None without any."""
        names = self.unprescribed_targets
        if not names:
            return None
        one = len(names) == 1
        return (f"{', '.join(names)} {'looks like a target' if one else 'look like targets'} but "
                f"{'has' if one else 'have'} no prescription: left out of plan QA and the organ intervals; give "
                f"{'it' if one else 'each'} with --prescription, e.g. --prescription {names[0]}=70")

    def require_dose(self) -> Volume:
        """The case's dose; a DoseSegError naming the patient when it has none."""
        if self.dose is None:
            raise DoseSegError(f"{self.source or self.name}: no dose")
        return self.dose

    def require_possible_dose_mask(self) -> Volume:
        """The possible-dose mask (or body); a DoseSegError naming the patient when it has none."""
        if self.possible_dose_mask is None:
            raise DoseSegError(f"{self.source or self.name}: no possible-dose mask")
        return self.possible_dose_mask

    @property
    def main_prescription(self) -> float | None:
        """The primary target's prescription (:func:`primary_target`), else the stated prescription."""
        primary = primary_target(self)
        return primary.prescription if primary is not None else self.prescription


def _printable(name: object) -> bool:
    return not isinstance(name, str) or printable_name(name) == name


def _printable_keys(mapping: dict, where: str, warn: bool = True) -> dict:
    """``mapping`` with printable names for keys (the same dict when they already are)."""
    if not isinstance(mapping, dict) or all(map(_printable, mapping)):
        return mapping
    printable: dict = {}
    given: dict[str, str] = {}
    for name, value in mapping.items():
        key = (name_from_file(where, name) if warn else printable_name(name)) if isinstance(name, str) else name
        if key in printable:
            raise DoseSegError(f"{where}: structures '{shown_name(given.get(key, key))}' and '{shown_name(name)}' "
                               f"are both '{key}' once their control characters are replaced; rename one")
        printable[key], given[key] = value, name
    return printable


@dataclass(frozen=True)
class PrimaryTarget:
    """The target the dose is normalised on (:func:`primary_target`); ``why``: the reason when others
    compete with it ("" when it is plainly the highest-dose target)."""

    name: str
    prescription: float
    why: str = ""


def chosen_target(name: str, why: str = "") -> str:
    """A primary target for a person, with why it was chosen when others compete with it (``PTV70``, or
    ``PTV70 (the PTV among CTV_70, PTV70 at 70 Gy)``)."""
    return f"{name} ({why})" if why else name


MIN_PRIMARY_CC = 1.0  # a smaller target (a 2-voxel GTV boost, a PTV sliver at the skin) never sets the normalisation


def _choose(targets: Mapping[str, float], volumes_cc: Mapping[str, float] | None) -> str | None:
    """The primary target's name: among the targets of at least :data:`MIN_PRIMARY_CC` (all when none is, or
    without ``volumes_cc``), the highest prescription; ties go to a PTV (:func:`is_ptv`), then the largest."""
    sizes = dict(volumes_cc or {})
    large = [n for n in targets if sizes.get(n, 0.0) >= MIN_PRIMARY_CC]
    pool = large or list(targets)
    if not pool:
        return None
    top = max(targets[n] for n in pool)
    tied = [n for n in pool if targets[n] == top]
    return max(tied, key=lambda n: (is_ptv(n), sizes.get(n, 0.0)))  # max keeps the first of equal keys


def primary_prescription(targets: Mapping[str, float], volumes_cc: Mapping[str, float] | None = None) -> float | None:
    """The primary target's prescription (Gy) among ``targets`` (name -> Gy; :func:`primary_target`'s rule with
    the targets' volumes ``volumes_cc``, name -> cc); None without a target.

    Without volumes (the Slicer panel's prescriptions, before any structure is measured) the size rule cannot
    apply: the highest PTV's prescription, without a PTV the highest, so ``GTV=74, PTV70=70`` gives 70 Gy.
    """
    if volumes_cc is None:
        ptvs = [gy for name, gy in targets.items() if is_ptv(name)]
        return max(ptvs or targets.values(), default=None)
    name = _choose(targets, volumes_cc)
    return None if name is None else targets[name]


def _volume_cc(mask: Volume) -> float:
    return float(np.count_nonzero(mask.array)) * float(np.prod(mask.spacing)) / 1000.0


def primary_target(case: Case) -> PrimaryTarget | None:
    """The primary target: among the targets with a known prescription of at least :data:`MIN_PRIMARY_CC`
    (all of them when none is that large), the highest prescription; ties go to a PTV (:func:`is_ptv`), then to
    the largest. None without a known dose.

    A CTV sharing a PTV's prescription, or a small GTV boost or PTV sliver above it, must not decide the
    normalisation; a CTV70 prescribed above every PTV (PTV56 the elective volume) must.
    """
    targets = case.targets
    sizes = {n: _volume_cc(case.structures[n]) for n in targets}
    name = _choose(targets, sizes)
    if name is None:
        return None
    top = targets[name]
    small = [f"{n} {sizes[n]:.2f} cc" for n, gy in targets.items() if gy > top]
    level = [n for n, gy in targets.items() if gy == top]
    reasons = []
    if len(level) > 1:
        largest = len([n for n in level if is_ptv(n)]) > 1 or not is_ptv(name)
        kind = "PTV" if is_ptv(name) else "target"
        reasons.append(f"the largest {kind} among {', '.join(level)} at {top:g} Gy" if largest
                       else f"the PTV among {', '.join(level)} at {top:g} Gy")
    if not is_ptv(name) and any(is_ptv(n) for n in targets):
        reasons.append(f"{name}: no PTV carries {top:g} Gy")
    if small:
        reasons.append(f"{', '.join(small)} too small to set the normalisation")
    return PrimaryTarget(name, top, "; ".join(reasons))
