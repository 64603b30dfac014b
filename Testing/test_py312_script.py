"""scripts/check_py312.sh and its pytest plugin: only a missing torch or MONAI turns a failure into a skip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import torchless_pytest


def _report(text: str, outcome: str = "failed") -> SimpleNamespace:
    return SimpleNamespace(failed=outcome == "failed", outcome=outcome, longrepr=text, fspath="Testing/test_x.py")


@pytest.mark.parametrize("module", ["torch", "monai", "torch.nn", "monai.networks"])
def test_missing_torch_or_monai_is_a_skip(module):
    report = _report(f"E   ModuleNotFoundError: No module named '{module}'")
    torchless_pytest._skip_if_torch(report)
    assert report.outcome == "skipped" and f"needs {module.split('.')[0]}" in report.longrepr[2]


@pytest.mark.parametrize("text", [
    "E   ModuleNotFoundError: No module named 'torchvision'",
    "E   ModuleNotFoundError: No module named 'nrrd'",
    "E   AssertionError: torch",
    "E   ImportError: cannot import name 'monai_thing' from 'DoseSegLib'",
])
def test_any_other_failure_still_fails(text):
    report = _report(text)
    torchless_pytest._skip_if_torch(report)
    assert report.outcome == "failed" and report.longrepr == text


def test_script_is_valid_bash_and_skips_clearly_without_python312(tmp_path):
    script = REPO / "scripts" / "check_py312.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    assert "SKIPPED: no Python 3.12 interpreter found" in text and "-p torchless_pytest" in text
    bash = shutil.which("bash")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON312": str(tmp_path / "none")}
    if Path("/usr/bin/python3.12").exists() or Path("/usr/local/bin/python3.12").exists():
        pytest.skip("a system Python 3.12 exists: the no-interpreter path cannot be shown here")
    result = subprocess.run([bash, str(script)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("SKIPPED: no Python 3.12"), result.stderr
