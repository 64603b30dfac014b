"""Patient folders of a cohort, always in natural order (pt_2 before pt_10)."""

from __future__ import annotations

import re
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.patient import CT_FILE


def natural_key(name: str) -> list[tuple[int, str]]:
    """Sort key that orders the digits in ``name`` as numbers: pt_2 < pt_10."""
    return [(int(t), "") if t.isdigit() else (-1, t) for t in re.findall(r"\d+|\D+", name)]


def natural_sorted(paths: list[Path]) -> list[Path]:
    """``paths`` by the natural order of their names."""
    return sorted(paths, key=lambda path: natural_key(path.name))


def is_patient_folder(folder: Path) -> bool:
    """A folder holding a patient: a ct.nrrd."""
    return (folder / CT_FILE).is_file()


def subfolders(folder: Path, what: str = "folder") -> list[Path]:
    """The sub-folders of ``folder`` in natural order; refused when there is none."""
    if not folder.is_dir():
        raise DoseSegError(f"{folder}: {what} not found")
    found = natural_sorted([p for p in folder.iterdir() if p.is_dir()])
    if not found:
        raise DoseSegError(f"{folder}: no {what} inside")
    return found


def patient_folders(folder: Path, limit: int | None = None) -> list[Path]:
    """The first ``limit`` (all when None) patient folders in ``folder``, natural order; refused when none."""
    if not folder.is_dir():
        raise DoseSegError(f"{folder}: folder not found")
    found = natural_sorted([p for p in folder.iterdir() if is_patient_folder(p)])
    if not found:
        raise DoseSegError(f"{folder}: no patient folder (with a ct.nrrd) found")
    return found[:limit]
