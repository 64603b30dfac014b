"""A patient: CT, named structures and optional dose, possible-dose mask and prescription."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import CGY_FROM, DOSE_FROM, check_prescription
from DoseSegLib.core.volume import Volume

__all__ = ["OARS", "TARGET_PATTERN", "Case", "is_target", "target_prescription"]

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


def is_target(name: str) -> bool:
    """A planning target volume by name (``PTV70``, ``PTV1``, ``PTV_High``, ``ptv low``)."""
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
        return [n for n in self.structures if is_target(n) or n in self.prescriptions]

    @property
    def targets(self) -> dict[str, float]:
        """Targets whose prescription is known (explicit, else from the name) in Gy, highest first."""
        found = {n: self.prescriptions.get(n, target_prescription(n)) for n in self.target_names}
        targets = {n: p for n, p in found.items() if p is not None}
        return dict(sorted(targets.items(), key=lambda item: -item[1]))

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
        """The stated prescription, or the highest target's dose level."""
        if self.prescription is not None:
            return self.prescription
        return next(iter(self.targets.values()), None)
