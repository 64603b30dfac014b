"""The library's shape: layers enforced by import-linter, small modules, a light lazy public API."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import DoseSegLib

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "DoseSegLib"
MAX_LINES = 450


def test_import_contracts_are_kept() -> None:
    """Layers (core < io < analysis < viz < models < run < cli), independent model tasks, no Slicer imports,
    no import circle; type-checking imports count (a circle drawn only for the type checker is still one)."""
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (bash setup.sh installs it)")
    result = subprocess.run([lint, str(REPO / ".importlinter")], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "4 kept, 0 broken" in result.stdout


def test_the_slicer_module_libraries_never_import_the_module_file() -> None:
    """DoseSeg.py imports its Logic, Test and Widget libraries; they never import DoseSeg.py back."""
    for path in (REPO / "DoseSeg").glob("*Lib/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            assert "DoseSeg" not in names, f"{path.relative_to(REPO)} imports DoseSeg.py (an import circle)"


def test_no_module_is_too_long_and_few_stay_at_the_top() -> None:
    long = {str(p.relative_to(REPO)): n for p in LIBRARY.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    assert len(list(LIBRARY.glob("*.py"))) <= 8


def test_import_doseseglib_does_not_import_torch() -> None:
    code = ("import sys, DoseSegLib; from DoseSegLib import Pipeline, RunOptions, Volume, compute_dvhs; "
            "assert 'torch' not in sys.modules and 'monai' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_every_public_name_resolves() -> None:
    for name in DoseSegLib.__all__:
        assert getattr(DoseSegLib, name) is not None
    with pytest.raises(AttributeError):
        DoseSegLib.no_such_name  # noqa: B018


def test_the_slicer_module_imports_only_public_library_names() -> None:
    """DoseSeg/ uses DoseSegLib's public API or its documented subpackages, never private names."""
    for path in (REPO / "DoseSeg").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("DoseSegLib"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {node.module}"


PUBLIC_MODULES = (  # the top-level API's modules and those the Slicer module imports
    "analysis.constraints", "analysis.dosecheck", "analysis.dvh", "analysis.plan", "cli.main", "core.alignment",
    "core.case", "core.colors", "core.errors", "core.names", "core.options", "core.version", "core.volume",
    "io.patient", "io.phantom", "io.tables", "models.common.catalogue", "models.common.training_loop",
    "models.dose.net", "run.pipeline", "run.results", "run.whatif",
)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_modules_declare_what_they_export(module: str) -> None:
    """``__all__`` names what a caller may import; every name in it exists."""
    if module.startswith("models."):
        pytest.importorskip("torch")
    imported = importlib.import_module(f"DoseSegLib.{module}")
    exported = getattr(imported, "__all__", None)
    assert exported, f"DoseSegLib.{module} has no __all__"
    assert [name for name in exported if not hasattr(imported, name)] == []


def test_the_top_level_api_is_exported_by_its_modules() -> None:
    from DoseSegLib import _PUBLIC

    for name, module in _PUBLIC.items():
        assert name in importlib.import_module(module).__all__, (name, module)


def test_no_test_module_imports_another() -> None:
    """Fixtures live in conftest.py, shared helpers in *_helpers.py modules: a test module is never imported."""
    for path in (REPO / "Testing").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            assert not [n for n in names if n.startswith("test_")], f"{path.name} imports a test module"
