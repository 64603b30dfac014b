"""The Slicer and Python versions DoseSeg runs on, checked before anything else of the module is imported.

Standard library only, and syntax that Python 3.6 still parses: an older Slicer must be
able to import this file to tell its user what to do.
"""

MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)


def versionProblem(slicerVersion, pythonVersion):
    """A message for the user when this Slicer or its Python is too old for DoseSeg, else None.

    Args:
        slicerVersion: (major, minor) of the running Slicer.
        pythonVersion: ``sys.version_info`` (or a tuple) of Slicer's Python.
    """
    slicerVersion = tuple(slicerVersion[:2])
    pythonVersion = tuple(pythonVersion[:2])
    if slicerVersion >= MINIMUM_SLICER and pythonVersion >= MINIMUM_PYTHON:
        return None
    return (
        "DoseSeg needs 3D Slicer {}.{} or later (Python {}.{}+); this is Slicer {}.{} with Python {}.{}. "
        "Install the current stable Slicer from https://download.slicer.org and DoseSeg from its "
        "Extensions Manager.".format(*MINIMUM_SLICER, *MINIMUM_PYTHON, *slicerVersion, *pythonVersion)
    )
