"""A patient: CT, named structures and optional dose, possible-dose mask and prescription."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import CGY_FROM, DOSE_FROM, check_prescription
from DoseSegLib.core.volume import Volume

__all__ = ["OARS", "TARGET_PATTERN", "Case", "PrimaryTarget", "chosen_target", "is_ptv", "primary_prescription",
           "primary_target", "target_prescription"]

OARS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TARGET_PATTERN = re.compile(r"^PTV(\d+(?:\.\d+)?)$")


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
    volumes). The targets known by name, and the pool :func:`primary_target` chooses from."""
    return name.upper().startswith("PTV")


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
        if self.prescription is not None:
            self.prescription = check_prescription(self.prescription, where)
        if not isinstance(self.prescriptions, dict):
            raise DoseSegError(f"{where}: prescriptions must be a dict of target name -> Gy")
        self.prescriptions = {name: check_prescription(gy, f"{where}: prescription of {name}")
                              for name, gy in self.prescriptions.items()}

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


def primary_prescription(targets: Mapping[str, float]) -> float | None:
    """The primary target's prescription (Gy) among ``targets`` (name -> Gy): the highest of the PTVs
    (:func:`is_ptv`), without a PTV the highest; None without a target."""
    ptvs = [gy for name, gy in targets.items() if is_ptv(name)]
    return max(ptvs or targets.values(), default=None)


def _volume_mm3(mask: Volume) -> float:
    return float(np.count_nonzero(mask.array)) * float(np.prod(mask.spacing))


def primary_target(case: Case) -> PrimaryTarget | None:
    """The primary target: the highest-prescription PTV (:func:`is_ptv`), the largest on ties;
    without a PTV, the highest-prescription target (the largest on ties). None without a known dose.

    The training plans' prescription convention was measured on their highest-dose PTV: a CTV or a small
    GTV boost sharing (or exceeding) its prescription must not decide the normalisation.
    """
    targets = case.targets
    top = primary_prescription(targets)
    if top is None:
        return None
    ptvs = [n for n in targets if is_ptv(n)]
    pool = ptvs or list(targets)
    tied = [n for n in pool if targets[n] == top]
    name = max(tied, key=lambda n: _volume_mm3(case.structures[n]))  # max keeps the first of equal volumes
    competing = [n for n, gy in targets.items() if gy >= top and n != name]
    if not competing:
        return PrimaryTarget(name, top)
    level = [n for n, gy in targets.items() if gy == top]
    higher = [f"{n} {gy:g} Gy" for n, gy in targets.items() if gy > top]
    if len(tied) > 1:
        why = f"the largest {'PTV' if ptvs else 'target'} among {', '.join(level)} at {top:g} Gy"
    elif len(level) > 1:
        why = f"the PTV among {', '.join(level)} at {top:g} Gy"
    else:
        why = f"the highest-dose PTV at {top:g} Gy"
    if higher:
        why += f"; {', '.join(higher)} {'is' if len(higher) == 1 else 'are'} not a PTV"
    return PrimaryTarget(name, top, why)
