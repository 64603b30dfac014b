"""Lint and types: ruff's selection (pyproject.toml) is clean on DoseSegLib and DoseSeg; mypy finds no error.

Both tools are pinned in requirements.txt (setup.sh installs them); a test skips only where the tool
itself is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
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

