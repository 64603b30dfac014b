"""The module's Python requirements (Resources/requirements.txt): which are missing or too old, and what to do.

Standard library only. torch is checked like the others but installed through the PyTorch
extension, never pip; a torch older than the file's minimum is reported, never replaced,
since other extensions may depend on it. A ``name==version`` line (packages only Run all
needs: the report's matplotlib, the gamma test's pymedphys) installs exactly that version when
the package is missing; a copy already installed is used as it is.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
# only the model steps and Run all need them (Align, radiomics and Compute DVH import none of them)
MODEL_PACKAGES = ("torch", "monai", "matplotlib", "pymedphys")
LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<operator>>=|==)\s*(?P<minimum>[0-9][0-9.]*)$")
PACKAGE_INDEX = ("pypi.org", 443)


@dataclass(frozen=True)
class Requirement:
    """``name>=minimum`` (or the pin ``name==minimum``) and the version installed now (None when missing)."""

    name: str
    minimum: str
    installed: str | None = None
    pinned: bool = False

    def __str__(self) -> str:
        return f"{self.name}{'==' if self.pinned else '>='}{self.minimum}"

    @property
    def met(self) -> bool:
        if self.installed is None:
            return False
        return self.pinned or versionTuple(self.installed) >= versionTuple(self.minimum)

    def describe(self) -> str:
        """``name>=minimum``, with the installed version when it is too old."""
        return str(self) if self.installed is None else f"{self} (installed: {self.installed})"


def versionTuple(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: "2.13.0+cpu" -> (2, 13, 0), "1.0rc1" -> (1, 0)."""
    numbers = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(part) for part in numbers.group(0).split(".")) if numbers else ()


def installedVersion(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def readRequirements(path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """The file's requirements with their installed versions; a DoseSegError names a line it cannot read."""
    requirements = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = LINE.match(text)
        if match is None:
            raise DoseSegError(f"{path}: line {number}: '{text}' is not of the form name>=version or name==version")
        requirements.append(Requirement(match["name"], match["minimum"], installedVersion(match["name"]),
                                        match["operator"] == "=="))
    return requirements


def unmetRequirements(withModels: bool = True, path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """The requirements missing or too old; those of the model steps only when ``withModels``."""
    return [r for r in readRequirements(path) if not r.met and (withModels or r.name not in MODEL_PACKAGES)]


def torchTooOld(unmet: list[Requirement]) -> str | None:
    """The message when an installed torch is older than required (DoseSeg does not replace it), else None."""
    for requirement in unmet:
        if requirement.name == "torch" and requirement.installed is not None:
            return (f"DoseSeg needs {requirement} but this Slicer has torch {requirement.installed}: update it "
                    "in the PyTorch Utils module (PyTorch extension), then restart Slicer.")
    return None


def installedPins(exclude: set[str] = frozenset()) -> str:
    """A pip constraints file's text pinning every installed distribution but ``exclude`` (names, any case),
    so that an install only adds packages (or updates the excluded ones)."""
    skip = {name.lower() for name in exclude}
    pins = {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
            if d.metadata["Name"] and d.metadata["Name"].lower() not in skip}
    return "\n".join(sorted(pins)) + "\n"


def offlineProblem(timeout: float = 3.0) -> str | None:
    """Why pip cannot reach the package index (a message for the user), or None when it can."""
    import socket

    try:
        socket.create_connection(PACKAGE_INDEX, timeout=timeout).close()
    except OSError as exc:
        return (f"DoseSeg cannot reach the Python package index ({PACKAGE_INDEX[0]}: {exc}) to install its packages. "
                "Connect this computer to the internet and try again, or install the packages listed in the "
                "extension's Resources/requirements.txt from local wheels with slicer.util.pip_install.")
    return None
