"""DoseSegLib: dose prediction, dose-aware segmentation, DVH and radiomics for radiotherapy.

Pure Python (no Slicer or Qt imports): usable from a terminal, a notebook or
Slicer's Python console. The public API is the names below, imported lazily so
that ``import DoseSegLib`` stays light (no torch until a model is needed)::

    from DoseSegLib import Pipeline, RunOptions
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from DoseSegLib.core.version import __version__

_PUBLIC = {
    "Volume": "DoseSegLib.core.volume",
    "Case": "DoseSegLib.core.case",
    "OARS": "DoseSegLib.core.case",
    "DoseSegError": "DoseSegLib.core.errors",
    "NameMapper": "DoseSegLib.core.names",
    "read_patient": "DoseSegLib.io.patient",
    "write_patient": "DoseSegLib.io.patient",
    "align_case": "DoseSegLib.core.alignment",
    "make_phantom": "DoseSegLib.io.phantom",
    "DVH": "DoseSegLib.analysis.dvh",
    "compute_dvhs": "DoseSegLib.analysis.dvh",
    "evaluate_plan": "DoseSegLib.analysis.plan",
    "PlanEvaluation": "DoseSegLib.analysis.plan",
    "Pipeline": "DoseSegLib.run.pipeline",
    "RunOptions": "DoseSegLib.run.results",
    "PatientResult": "DoseSegLib.run.results",
    "BatchResult": "DoseSegLib.run.results",
    "WhatIfSession": "DoseSegLib.run.whatif",
}
__all__ = [
    "DVH",
    "OARS",
    "BatchResult",
    "Case",
    "DoseSegError",
    "NameMapper",
    "PatientResult",
    "Pipeline",
    "PlanEvaluation",
    "RunOptions",
    "Volume",
    "WhatIfSession",
    "__version__",
    "align_case",
    "compute_dvhs",
    "evaluate_plan",
    "make_phantom",
    "read_patient",
    "write_patient",
]

if TYPE_CHECKING:
    from DoseSegLib.analysis.dvh import DVH, compute_dvhs
    from DoseSegLib.analysis.plan import PlanEvaluation, evaluate_plan
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.core.case import OARS, Case
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.core.names import NameMapper
    from DoseSegLib.core.volume import Volume
    from DoseSegLib.io.patient import read_patient, write_patient
    from DoseSegLib.io.phantom import make_phantom
    from DoseSegLib.run.pipeline import Pipeline
    from DoseSegLib.run.results import BatchResult, PatientResult, RunOptions
    from DoseSegLib.run.whatif import WhatIfSession


def __getattr__(name: str) -> object:
    """Import a public name's module on first use."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'DoseSegLib' has no attribute '{name}'")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
