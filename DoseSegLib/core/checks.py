"""Arguments of the public Python API checked at the door: misuse gets the CLI's one-line DoseSegError,
not a TypeError deep inside (``run_batch("xyz")`` must not run three patients named x, y and z)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError


def require_path(value: object, what: str) -> Path:
    """``value`` as a Path; a DoseSegError unless it is a non-empty str or os.PathLike."""
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return Path(value)
    raise DoseSegError(f"{what}: expected a file or folder path (str or pathlib.Path), got {_shown(value)}")


def named_path(path: Path) -> Path:
    """``path``, made absolute when it has no name of its own (``.``, ``..``, ``a/..``): a patient folder's name
    names the patient and its outputs. Links are not resolved (a linked folder keeps the link's name)."""
    return Path(os.path.abspath(path)) if path.name in ("", "..") else path


def require_paths(values: object, what: str) -> list[Path]:
    """A list of Paths from a list, tuple or other iterable of paths; a single path is refused."""
    if isinstance(values, (str, bytes, os.PathLike)) or not isinstance(values, Iterable):
        raise DoseSegError(f"{what}: expected a list of paths (e.g. [\"pt_1\", \"pt_2\"]), got {_shown(values)}")
    paths = [require_path(v, f"{what}[{i}]") for i, v in enumerate(values)]
    if not paths:
        raise DoseSegError(f"{what}: the list of paths is empty")
    return paths


def require_type(value: object, types: type | tuple[type, ...], what: str) -> None:
    """A DoseSegError naming ``what`` unless ``value`` is one of ``types``."""
    if not isinstance(value, types):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise DoseSegError(f"{what}: expected {names}, got {_shown(value)}")


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
