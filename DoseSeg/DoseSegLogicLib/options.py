"""Everything the command line takes for one patient, as one object the panel and the console fill in.

:class:`PatientOptions` turns into the command line's options for each step (only those the
step takes) and into the objects the in-process DVH step needs (name mapping, goals), so a
step run from the panel reads the patient exactly as ``doseseg`` with the same options would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.options import Device, DvhMethod

# which options each command takes (see `doseseg <command> --help`)
NAME_COMMANDS = {"align", "predict-dose", "radiomics", "run", "dvh"}
MODEL_COMMANDS = {"segment", "predict-dose", "run"}
DOSE_MODEL_COMMANDS = {"predict-dose", "run"}
SITE_COMMANDS = {"predict-dose", "run"}


def parsePrescriptions(text: str) -> dict[str, float]:
    """``"PTV1=60, PTV2=54"`` -> {"PTV1": 60.0, "PTV2": 54.0} (Gy); empty text gives {}."""
    prescriptions = {}
    for item in filter(None, (part.strip() for part in text.replace(";", ",").split(","))):
        name, separator, value = item.rpartition("=")
        try:
            gy = float(value)
        except ValueError:
            gy = -1.0
        if not separator or not name.strip() or not 0.0 < gy < 200.0:
            raise DoseSegError(f"prescription '{item}': expected NAME=GY with 0 < GY < 200, e.g. PTV1=60")
        prescriptions[name.strip()] = gy
    return prescriptions


def formatPrescriptions(prescriptions: Mapping[str, float]) -> str:
    """The inverse of :func:`parsePrescriptions`."""
    return ", ".join(f"{name}={gy:g}" for name, gy in prescriptions.items())


@dataclass
class PatientOptions:
    """How to read and evaluate one patient, as ``doseseg`` options.

    Attributes:
        prescriptions: target name -> Gy (``--prescription``), e.g. {"PTV1": 60}.
        namesFile: JSON of extra structure-name aliases (``--names``).
        goalsFile: clinical goals CSV, or a site table name: head-and-neck, prostate (``--constraints``).
        anySite: run the head-and-neck models on another site (``--any-site``).
        uncertainty: calibrated DVH intervals (``--uncertainty``) at coverage ``level``.
        dvhMethod: ``auto`` (partial volume) or ``voxel`` (``--dvh-method``).
        dvhStep: DVH bin width in Gy.
        device: where the models run: auto, cpu or cuda.
        mirrorAveraging: ``--tta``.
        allowHighDose: accept a dose above 200 Gy (``--allow-high-dose``).
        doseModel: a dose model by catalogue name, bundled or the user's (``--model``); None: the default.
    """

    prescriptions: dict[str, float] = field(default_factory=dict)
    namesFile: str | None = None
    goalsFile: str | None = None
    anySite: bool = False
    uncertainty: bool = False
    level: float = 0.9
    dvhMethod: str = "auto"
    dvhStep: float = 0.1
    device: str = "auto"
    mirrorAveraging: bool = False
    allowHighDose: bool = False
    doseModel: str | None = None

    def __post_init__(self) -> None:
        DvhMethod.parse(self.dvhMethod)  # the texts the command line takes, checked here with a suggestion
        Device.parse(self.device)
        if not 0.0 < self.level < 1.0:
            raise DoseSegError(f"uncertainty level {self.level:g}: strictly between 0 and 1")

    @classmethod
    def fromPanel(cls, prescriptions: str, namesFile: object, goalsTable: str, goalsFile: object, dvhMethod: str,
                  dvhStep: float, device: str, mirrorAveraging: bool, anySite: bool, uncertainty: bool,
                  doseModel: str = "") -> PatientOptions:
        """The options of the panel's fields: prescriptions as text (``PTV1=60, PTV2=54``), files as paths (empty
        or "." for none), the goals file over the site table."""
        def path(value: object) -> str | None:
            text = str(value or "").strip()
            return None if text in ("", ".") else text

        return cls(parsePrescriptions(prescriptions), path(namesFile), path(goalsFile) or goalsTable,
                   anySite, uncertainty, 0.9, dvhMethod, dvhStep, device, mirrorAveraging,
                   doseModel=doseModel.strip() or None)

    def mapper(self) -> NameMapper:
        """The structure-name mapping of ``namesFile`` and ``prescriptions``."""
        if self.namesFile:
            return NameMapper.from_json(self.namesFile, self.prescriptions)
        return NameMapper(prescriptions=self.prescriptions)

    def arguments(self, command: str) -> list[str]:
        """The options of ``doseseg COMMAND`` (after the patient folder) that these choices give."""
        args: list[str] = []
        if command in NAME_COMMANDS:
            if self.namesFile:
                args += ["--names", str(self.namesFile)]
            for name, gy in self.prescriptions.items():
                args += ["--prescription", f"{name}={gy:g}"]
        if command in MODEL_COMMANDS:
            args += ["--device", self.device] + (["--tta"] if self.mirrorAveraging else [])
        if command in DOSE_MODEL_COMMANDS and self.doseModel:
            args += ["--model", self.doseModel]
        if command in SITE_COMMANDS:
            args += ["--any-site"] if self.anySite else []
            args += ["--uncertainty", "--level", f"{self.level:g}"] if self.uncertainty else []
        if command in {"run", "dvh"}:
            args += ["--constraints", str(self.goalsFile)] if self.goalsFile else []
            args += ["--dvh-method", self.dvhMethod]
        if command == "dvh":
            args += ["--step", f"{self.dvhStep:g}"]
        if command in {"run", "radiomics", "dvh"} and self.allowHighDose:
            args.append("--allow-high-dose")
        return args
