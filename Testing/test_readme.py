"""The README's two commands are a promise: CI must run the test command as written."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in (ROOT / "README.md").read_text()


def test_readme_main_command_runs_the_demo() -> None:
    assert "bash setup.sh && .venv/bin/doseseg demo -o demo_output --force" in (ROOT / "README.md").read_text()
