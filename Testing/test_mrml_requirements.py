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
    assert set(module) == {"torch", "monai", "pynrrd", "slicerio", "simpleitk", "scipy", "tqdm"}
    pyproject = (REPO / "pyproject.toml").read_text()
    pins = _pins(REPO / "requirements.txt")
    for name, requirement in module.items():
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
                 "SimpleITK": "2.5.7", "scipy": "1.17.1", "tqdm": "4.70.1"}
    monkeypatch.setattr(requirements, "installedVersion", installed.get)
    unmet = requirements.unmetRequirements()
    assert [(r.name, r.installed) for r in unmet] == [("monai", None), ("pynrrd", "0.4.3")]
    assert [r.describe() for r in unmet] == ["monai>=1.3", "pynrrd>=1.0 (installed: 0.4.3)"]
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
    (tmp_path / "requirements.txt").write_text("# comment\nmonai>=1.3\nscipy==1.17\n")
    with pytest.raises(DoseSegError, match=r"requirements.txt: line 3: 'scipy==1.17' is not of the form name>=version"):
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
