"""Lint, types and size: ruff's selection (pyproject.toml) is clean on DoseSegLib and DoseSeg; mypy finds no
error; no module is over 500 lines.

Both tools are pinned in requirements.txt (setup.sh installs them); a test skips only where the tool
itself is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _require(tool: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (bash setup.sh installs it from requirements.txt)")


def test_ruff_selection_is_configured_and_clean() -> None:
    _require("ruff")
    selected = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["select"]
    assert set(selected) >= {"E", "F", "W", "B", "UP", "SIM", "RUF"}
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "DoseSegLib", "DoseSeg"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


MAX_MODULE_LINES = 500  # GUIDE.md: no module over ~500 lines
SIZED_FOLDERS = ("DoseSegLib", "DoseSeg", "scripts", "benchmarks", "Testing")


def test_no_module_is_over_500_lines() -> None:
    """Every .py of the library, the Slicer module, scripts, benchmarks and tests; the message lists each
    offender."""
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for folder in SIZED_FOLDERS for path in sorted((REPO / folder).rglob("*.py"))}
    assert len(sizes) > 100, "the folders were found"
    offenders = [f"{path}: {lines} lines" for path, lines in sizes.items() if lines > MAX_MODULE_LINES]
    assert not offenders, f"split these modules (limit {MAX_MODULE_LINES} lines):\n" + "\n".join(offenders)


def test_mypy_finds_no_error_in_the_library() -> None:
    """About 25 s of CPU from scratch; mypy's incremental cache (outside the repository) makes reruns fast."""
    _require("mypy")
    pytest.importorskip("torch")  # its types are part of the check (absent in scripts/check_py312.sh's environment)
    cache = Path(tempfile.gettempdir()) / f"doseseg-mypy-cache-{sys.version_info.major}.{sys.version_info.minor}"
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Success: no issues found" in result.stdout
