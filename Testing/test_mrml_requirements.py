"""The module's Python requirements (DoseSeg/Resources/requirements.txt): parsing, what is unmet, an old torch."""

from __future__ import annotations

import re

import mrml_helpers
import pytest

pytest_plugins = ["mrml_fixtures"]

from DoseSegLogicLib import requirements

from DoseSegLib import DoseSegError

REPO = mrml_helpers.REPO


def _pins(path) -> dict[str, str]:
    pins = re.finditer(r"^(?P<name>[\w.-]+)==(?P<version>\S+)", path.read_text(), re.MULTILINE)
    return {m["name"].lower(): m["version"] for m in pins}


def test_the_file_agrees_with_the_project():
    """Every module requirement has the project's minimum (pyproject) and is met by the project's pins."""
    module = {r.name.lower(): r for r in requirements.readRequirements()}
    assert set(module) == {"torch", "monai", "pynrrd", "slicerio", "simpleitk", "scipy", "tqdm", "matplotlib",
                           "pymedphys"}, "everything Run all imports (the report's matplotlib, the gamma's pymedphys)"
    pyproject = (REPO / "pyproject.toml").read_text()
    pins = _pins(REPO / "requirements.txt")
    for name, requirement in module.items():
        if requirement.pinned:  # exactly the project's pin
            assert pins[name] == requirement.minimum, name
            continue
        pattern = rf'"{re.escape(requirement.name)}>={re.escape(requirement.minimum)}"'
        assert re.search(pattern, pyproject, re.IGNORECASE), name
        assert requirements.versionTuple(pins[name]) >= requirements.versionTuple(requirement.minimum), name
    assert "pyradiomics" not in (requirements.REQUIREMENTS_FILE.read_text()).split("#")[0]


@pytest.mark.parametrize(("version", "expected"), [
    ("2.13.0+cpu", (2, 13, 0)), ("1.0rc1", (1, 0)), ("4.70.1", (4, 70, 1)), ("10", (10,)), ("dev", ())])
def test_version_tuple(version, expected):
    assert requirements.versionTuple(version) == expected


def test_unmet_lists_missing_and_too_old_and_models_only_when_asked(monkeypatch):
    installed = {"torch": "2.13.0+cpu", "monai": None, "pynrrd": "0.4.3", "slicerio": "1.4.0",
                 "SimpleITK": "2.5.7", "scipy": "1.17.1", "tqdm": "4.70.1", "matplotlib": "3.5.0", "pymedphys": None}
    monkeypatch.setattr(requirements, "installedVersion", installed.get)
    unmet = requirements.unmetRequirements()
    assert [(r.name, r.installed) for r in unmet] == [("monai", None), ("pynrrd", "0.4.3"), ("pymedphys", None)]
    assert [r.describe() for r in unmet] == ["monai>=1.3", "pynrrd>=1.0 (installed: 0.4.3)", "pymedphys==0.41.0"], \
        "a pinned package already installed (matplotlib 3.5) is used as it is"
    assert [r.name for r in requirements.unmetRequirements(withModels=False)] == ["pynrrd"]
    assert requirements.torchTooOld(unmet) is None


def test_an_old_torch_is_reported_not_replaced(monkeypatch):
    monkeypatch.setattr(requirements, "installedVersion", lambda name: "2.0.1" if name == "torch" else "99")
    unmet = requirements.unmetRequirements()
    assert [r.name for r in unmet] == ["torch"]
    message = requirements.torchTooOld(unmet)
    assert message.startswith("DoseSeg needs torch>=2.1 but this Slicer has torch 2.0.1")
    assert "PyTorch Utils" in message
    monkeypatch.setattr(requirements, "installedVersion", lambda name: None)
    assert requirements.torchTooOld(requirements.unmetRequirements()) is None, "a missing torch is installed"


def test_a_line_it_cannot_read_names_the_file_and_line(tmp_path):
    (tmp_path / "requirements.txt").write_text("# comment\nmonai>=1.3\nscipy==1.17\nnumpy<3\n")
    with pytest.raises(DoseSegError, match=r"requirements.txt: line 4: 'numpy<3' is not of the form name>=version"):
        requirements.readRequirements(tmp_path / "requirements.txt")


def test_the_installed_versions_are_read_from_the_environment():
    found = {r.name: r.installed for r in requirements.readRequirements()}
    import scipy

    assert found["scipy"] == scipy.__version__


def test_pins_keep_every_installed_package_but_those_to_update():
    import numpy

    pins = requirements.installedPins(exclude={"SciPy", "tqdm"}).splitlines()
    assert f"numpy=={numpy.__version__}" in pins
    assert not [pin for pin in pins if pin.lower().startswith(("scipy==", "tqdm=="))]
    assert all(re.fullmatch(r"[\w.-]+==\S+", pin) for pin in pins)


def test_offline_gives_a_clear_message(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    message = requirements.offlineProblem()
    assert message.startswith("DoseSeg cannot reach the Python package index (pypi.org: Network is unreachable)")
    assert "slicer.util.pip_install" in message


def test_align_and_compute_dvh_import_no_torch(tmp_path):
    """The scene layer and the DVH path never import torch (a Slicer without the PyTorch extension runs them)."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'DoseSeg'); sys.modules['torch'] = None; "
            "from DoseSegLogicLib import pipeline, evaluation, nodes, options, sceneinputs; "
            "from DoseSegLib.cli.main import main; "
            "import DoseSegLogicLib.pipeline as p; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
