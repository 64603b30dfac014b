"""Whether commands draw progress bars: on a terminal, or when a caller asks through the environment."""

from __future__ import annotations

import os
import sys

ENVIRONMENT = "DOSESEG_PROGRESS"  # "1": draw progress bars even when stderr is not a terminal (e.g. Slicer)


def progress_enabled() -> bool:
    """True when stderr is a terminal or ``DOSESEG_PROGRESS=1``."""
    return sys.stderr.isatty() or os.environ.get(ENVIRONMENT) == "1"
