"""A patient: CT, named structures and optional dose, possible-dose mask and prescription."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from DoseSegLib.core.volume import Volume

OARS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TARGET_PATTERN = re.compile(r"^PTV(\d+(?:\.\d+)?)$")


def target_prescription(name: str) -> float | None:
    """Prescription in Gy of a canonical target name such as ``PTV70``, else None."""
    match = TARGET_PATTERN.match(name)
    return float(match.group(1)) if match else None


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
    prescriptions: dict[str, float] = field(default_factory=dict)  # target -> Gy, e.g. from an RTPLAN
    dicom_series: str | None = None  # SeriesInstanceUID of the CT when read from DICOM (outputs reference it)

    @property
    def targets(self) -> dict[str, float]:
        """Target structure names and their prescriptions in Gy, highest first."""
        found = {n: target_prescription(n) for n in self.structures}
        targets = {n: p for n, p in found.items() if p is not None}
        return dict(sorted(targets.items(), key=lambda item: -item[1]))

    @property
    def main_prescription(self) -> float | None:
        """The stated prescription, or the highest target's dose level."""
        if self.prescription is not None:
            return self.prescription
        return next(iter(self.targets.values()), None)
