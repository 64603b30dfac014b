"""Running ``doseseg`` in the test process."""

from __future__ import annotations

from pathlib import Path

import pytest

from DoseSegLib.cli.main import main


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``doseseg argv`` run in this process."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_error(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str]:
    """Exit code and stderr of ``doseseg argv`` run in this process (stdout discarded)."""
    code, _, err = run_cli(capsys, *argv)
    return code, err
