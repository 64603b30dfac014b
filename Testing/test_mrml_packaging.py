"""The extension as Slicer's build installs it: configure, build and install with Slicer's real CMake macros.

Uses the mock SlicerConfig.cmake of ``../shared/tools/slicer_cmake_mock`` (CTK's
``ctkMacroCompilePythonScript`` and Slicer's ``slicerMacroBuildScriptedModule``, copied
from those projects; ``DOSESEG_SLICER_CMAKE_MOCK`` may point elsewhere). Skipped when
cmake or the mock is absent. Checks exactly one copy of the module, of DoseSegLib and of
each weight file, and that the installed DoseSegLib finds the installed model catalogue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from DoseSegLib.models.common.catalogue import load_catalogue, sha256_of

REPO = Path(__file__).resolve().parents[1]
MOCK = Path(os.environ.get("DOSESEG_SLICER_CMAKE_MOCK", REPO.parent / "shared" / "tools" / "slicer_cmake_mock"))
SOURCE_MODELS = REPO / "Resources" / "Models"


def _run(*command: object, cwd: Path | None = None) -> str:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The install prefix of a configure + build + install of the repository with the mock."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found: the packaging check needs it")
    if not (MOCK / "SlicerConfig.cmake").is_file():
        pytest.skip(f"Slicer CMake mock not found at {MOCK} (set DOSESEG_SLICER_CMAKE_MOCK)")
    root = tmp_path_factory.mktemp("packaging")
    build, prefix = root / "build", root / "install"
    _run("cmake", "-S", REPO, "-B", build, f"-DSlicer_DIR={MOCK}", f"-DCMAKE_INSTALL_PREFIX={prefix}")
    _run("cmake", "--build", build)
    _run("cmake", "--install", build)
    return prefix


@pytest.fixture(scope="module")
def modules_dir(installed) -> Path:
    """The one installed qt-scripted-modules folder."""
    found = [p for p in installed.rglob("qt-scripted-modules") if p.is_dir()]
    assert len(found) == 1, f"nested or repeated module folders: {found}"
    return found[0]


def _relative_files(folder: Path, pattern: str) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(pattern) if "__pycache__" not in p.parts)


def test_one_copy_of_the_module_and_of_doseseglib(installed, modules_dir):
    assert [p.relative_to(modules_dir).as_posix() for p in installed.rglob("DoseSeg.py")] == ["DoseSeg.py"]
    assert [p.relative_to(modules_dir).as_posix() for p in installed.rglob("DoseSegLogicLib")] == ["DoseSegLogicLib"]
    assert [p.relative_to(modules_dir).as_posix() for p in installed.rglob("DoseSegLib")] == ["DoseSegLib"]
    for resource in ("Resources/UI/DoseSeg.ui", "Resources/Icons/DoseSeg.png", "Resources/requirements.txt",
                     "Resources/Terminology/DoseSeg.term.json"):
        assert len(list(installed.rglob(Path(resource).name))) == 1 and (modules_dir / resource).is_file()


def test_every_source_file_is_installed_once(installed, modules_dir):
    packages = (("DoseSegLib", REPO / "DoseSegLib"), ("DoseSegLogicLib", REPO / "DoseSeg" / "DoseSegLogicLib"))
    for package, source in packages:
        expected = _relative_files(source, "*.py")
        assert _relative_files(modules_dir / package, "*.py") == expected, f"{package}: subpackages missing"
        assert _relative_files(modules_dir / package, "*.pyc") == [f"{name}c" for name in expected]
    for data in _relative_files(REPO / "DoseSegLib" / "data", "*"):
        assert (modules_dir / "DoseSegLib" / "data" / data).is_file(), data


def test_one_copy_of_each_weight_file_with_its_checksum(installed, modules_dir):
    weights = _relative_files(SOURCE_MODELS, "*.pt")
    assert weights, "no bundled weights to check"
    for name in weights:
        copies = list(installed.rglob(name))
        assert [p.relative_to(modules_dir).as_posix() for p in copies] == [f"Resources/Models/{name}"], name
    for entry in load_catalogue(modules_dir / "Resources" / "Models"):
        assert sha256_of(entry.file) == entry.sha256, entry.name
    installed_bytes = sum(p.stat().st_size for p in installed.rglob("*") if p.is_file())
    source_bytes = sum(p.stat().st_size for p in SOURCE_MODELS.rglob("*") if p.is_file())
    assert installed_bytes < 1.2 * source_bytes + 5e6, "the install holds more than one copy of the weights"


def test_installed_library_finds_the_installed_models(modules_dir, tmp_path):
    """DoseSegLib (models/common/catalogue.py) looks for Resources/Models beside its own folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOSESEG_MODELS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(modules_dir)
    code = ("import DoseSegLib.models.common.catalogue as c; "
            "print(c.__file__); print(c.models_dir()); print(len(c.load_catalogue()))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    library, models, count = result.stdout.split("\n")[:3]
    assert Path(library).is_relative_to(modules_dir)
    assert Path(models) == modules_dir / "Resources" / "Models"
    assert int(count) == len(load_catalogue(SOURCE_MODELS)) > 0
