"""``python -m DoseSegLib.cli``: the ``doseseg`` command (how the Slicer module runs it)."""

import sys

from DoseSegLib.cli.main import main

sys.exit(main())
