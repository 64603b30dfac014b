
__all__ = ["DoseSegError"]
"""The one exception type users see: a short message naming the file and the problem."""


class DoseSegError(Exception):
    """Bad input or a refused operation; the CLI prints it on one line and exits non-zero."""
