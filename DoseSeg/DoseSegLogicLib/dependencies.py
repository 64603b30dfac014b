"""Optional packages the module takes from other Slicer extensions, found without importing them.

pyradiomics has no wheel for Slicer's Python 3.12 nor for macOS, and building it needs a
compiler most users lack: DoseSeg never pip-installs it. It uses the copy the SlicerRadiomics
extension puts on Slicer's Python path, and otherwise switches radiomics off with a message.
Standard library only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

RADIOMICS_UNAVAILABLE = (
    "Radiomics needs pyradiomics, which DoseSeg takes from the SlicerRadiomics extension: install "
    "SlicerRadiomics from the Extensions Manager and restart Slicer. (pyradiomics has no ready-made "
    "package for Slicer's Python, and building one needs a compiler.) Run all skips the radiomics meanwhile."
)


def radiomicsFolder() -> Path | None:
    """The folder holding the importable ``radiomics`` package (SlicerRadiomics' copy in Slicer), None when absent."""
    try:
        spec = importlib.util.find_spec("radiomics")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def radiomicsProblem() -> str | None:
    """Why the radiomics step cannot run here, or None when it can."""
    return None if radiomicsFolder() is not None else RADIOMICS_UNAVAILABLE
