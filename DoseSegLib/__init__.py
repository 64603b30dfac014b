"""DoseSegLib: dose prediction, dose-aware segmentation, DVH and radiomics for radiotherapy.

Pure Python (no Slicer or Qt imports): usable from a terminal, a notebook or
Slicer's Python console.
"""

from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

__version__ = "0.1.0"
__all__ = ["OARS", "Case", "DoseSegError", "Volume", "__version__"]
