"""Static checks of the Slicer module (Qt and slicer.app are absent here): .ui, widget names, CMake lists."""

from __future__ import annotations

import ast
import importlib.util
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "DoseSeg"
UI = MODULE / "Resources" / "UI" / "DoseSeg.ui"
SOURCE = (MODULE / "DoseSeg.py").read_text()
PANEL = (MODULE / "DoseSegWidgetLib" / "whatifpanel.py").read_text()  # the What-if section's widget code
FIELDS = (MODULE / "DoseSegWidgetLib" / "panelfields.py").read_text()  # the panel's fields: inputs, options, results
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QDoubleSpinBox", "QProgressBar", "QTabWidget",
              "QCheckBox", "QLineEdit"}


def _widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def _parameter_fields() -> dict[str, str]:
    """Field names of DoseSegParameterNode and their annotation's source text."""
    tree = ast.parse(SOURCE)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DoseSegParameterNode")
    return {s.target.id: ast.unparse(s.annotation) for s in cls.body if isinstance(s, ast.AnnAssign)}


def test_module_compiles(tmp_path):
    for path in MODULE.rglob("*.py"):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{path.stem}.pyc"), doraise=True)


def test_ui_is_a_qt_designer_form():
    root = ET.parse(UI).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "DoseSeg")
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in _widgets().values()}
    assert used - QT_CLASSES <= declared, "every Slicer/CTK widget class is declared as a custom widget"
    assert {"qMRMLNodeComboBox", "ctkCollapsibleButton", "ctkSliderWidget"} <= used
    assert {"QProgressBar", "QPushButton"} <= used


def test_every_widget_the_module_uses_exists():
    names = set(re.findall(r"self\.ui\.(\w+)", SOURCE + PANEL + FIELDS))
    assert names, "the widget uses its .ui"
    assert names <= set(_widgets()), f"missing in the .ui: {sorted(names - set(_widgets()))}"


def test_parameter_bindings_match_the_parameter_node():
    fields = _parameter_fields()
    bound = {}
    for widget in _widgets().values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget
    assert set(bound) <= set(fields)
    for parameter, widget in bound.items():
        annotation = fields[parameter]
        if annotation.startswith("vtkMRML"):
            assert widget.get("class") == "qMRMLNodeComboBox"
            node_types = [s.text for s in widget.find("property[@name='nodeTypes']").iter("string")]
            assert node_types == [annotation], parameter
        elif "Choice" in annotation:
            assert widget.get("class") == "QComboBox", parameter
        elif annotation == "bool":
            assert widget.get("class") == "QCheckBox", parameter
        elif annotation == "str":
            assert widget.get("class") == "QLineEdit", parameter
        elif annotation == "pathlib.Path":
            assert widget.get("class") == "ctkPathLineEdit", parameter
        else:
            assert widget.get("class") in ("QDoubleSpinBox", "ctkSliderWidget"), parameter
    inputs = {"ctVolume", "segmentation", "referenceDose", "prescriptions", "device", "mirrorAveraging",
              "whatIfDebounce", "sensitivityMetric", "namesFile", "goalsTable", "goalsFile", "dvhMethod", "anySite",
              "uncertainty", "dvhStep"}
    outputs = {"predictedDose", "dvhChart", "metricsTable", "constraintsTable", "radiomicsTable"}
    assert inputs | outputs <= set(bound)


def test_mrml_widgets_receive_the_scene():
    root = ET.parse(UI).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {name for name, w in _widgets().items() if w.get("class", "").startswith("qMRML") and name != "DoseSeg"}
    assert mrml == receivers


def test_cmake_lists_install_every_module_file():
    module_cmake = (MODULE / "CMakeLists.txt").read_text()
    for path in MODULE.rglob("*.py"):
        relative = path.relative_to(MODULE).as_posix()
        assert relative.replace("DoseSeg.py", "${MODULE_NAME}.py") in module_cmake or relative in module_cmake, relative
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in module_cmake
        assert (MODULE / resource.replace("${MODULE_NAME}", "DoseSeg")).is_file()
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module_cmake
    top = (REPO / "CMakeLists.txt").read_text()
    for text in ('EXTENSION_CATEGORY "Radiotherapy"', 'EXTENSION_DEPENDS "PyTorch"', "find_package(Slicer REQUIRED)",
                 "add_subdirectory(DoseSeg)", "ctkMacroCompilePythonScript", "DoseSegLib/*.py", "NO_INSTALL_SUBDIR"):
        assert text in top, text


def test_icon_is_a_128_pixel_png():
    data = (MODULE / "Resources" / "Icons" / "DoseSeg.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == int.from_bytes(data[20:24], "big") == 128


def test_logic_layer_is_qt_free():
    for path in (MODULE / "DoseSegLogicLib").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from) (qt|ctk)\b|slicer\.app\b|ScriptedLoadableModule|slicer\.modules",
                             text, re.MULTILINE), path.name


# -- Slicer and Python versions ------------------------------------------------------------------------------------


def _load_compat():
    spec = importlib.util.spec_from_file_location("doseseg_compat", MODULE / "DoseSegLogicLib" / "compat.py")
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    return compat


@pytest.mark.parametrize(("slicer_version", "python", "ok"), [
    ((5, 8), (3, 9, 10), False), ((5, 6), (3, 9), False), ((5, 10), (3, 9), False),
    ((5, 10), (3, 12, 1), True), ((5, 11), (3, 12), True), ((6, 0), (3, 13), True),
])
def test_older_slicer_gets_a_clear_message(slicer_version, python, ok):
    problem = _load_compat().versionProblem(slicer_version, python)
    if ok:
        assert problem is None
    else:
        assert problem.startswith("DoseSeg needs 3D Slicer 5.10 or later")
        assert f"this is Slicer {slicer_version[0]}.{slicer_version[1]} with Python {python[0]}.{python[1]}" in problem
        assert "download.slicer.org" in problem


def test_version_check_comes_before_the_library():
    """On Slicer 5.8 (Python 3.9) DoseSeg.py and compat.py must parse and run up to the check; DoseSegLib
    (3.10+ code) is only imported when the check passes, and the panel and the logic stop at the message."""
    ast.parse((MODULE / "DoseSegLogicLib" / "compat.py").read_text(), feature_version=(3, 6))
    tree = ast.parse(SOURCE, feature_version=(3, 9))
    assert not any(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in tree.body)
    for node in ast.walk(tree):  # annotations are evaluated at import: no `X | Y` (3.10+)
        for annotation in (getattr(node, "returns", None), getattr(node, "annotation", None)):
            if annotation is not None:
                assert not any(isinstance(n, ast.BinOp) for n in ast.walk(annotation)), ast.unparse(annotation)
    top_imports = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert "DoseSegLogicLib.compat" in top_imports
    assert not [m for m in top_imports
                if m.startswith("DoseSegLib") or m in ("DoseSegLogicLib", "DoseSegLogicLib.pipeline")]
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and "VERSION_PROBLEM" in ast.unparse(n.test))
    assert {n.module for n in guarded.body if isinstance(n, ast.ImportFrom)} >= {"DoseSegLogicLib.pipeline",
                                                                                 "DoseSegWidgetLib.whatifpanel"}
    assert not [m for m in top_imports if m.startswith("DoseSegWidgetLib")]
    ast.parse(PANEL, feature_version=(3, 9))
    ast.parse(FIELDS, feature_version=(3, 9))
    assert re.search(r"def setup\(self\).*?if VERSION_PROBLEM:.*?QLabel\(VERSION_PROBLEM\).*?return", SOURCE, re.DOTALL)
    assert re.search(r"class DoseSegLogic\(.*?if VERSION_PROBLEM:\s+raise RuntimeError\(VERSION_PROBLEM\)", SOURCE,
                     re.DOTALL)


def test_radiomics_button_is_disabled_with_the_reason_and_pyradiomics_never_built():
    assert "self._radiomicsProblem = radiomicsProblem()" in SOURCE
    assert "self.ui.radiomicsButton.toolTip = self._radiomicsProblem" in SOURCE
    assert re.search(r"self\.ui\.radiomicsButton\.enabled = .*and self\._radiomicsProblem is None", SOURCE)
    assert "pyradiomics" not in re.sub(r'""".*?"""|#.*', "", SOURCE, flags=re.DOTALL), "no pip requirement for it"
    assert "--no-build-isolation" not in SOURCE and '"--only-binary", ":all:"' in SOURCE


def _method(name: str, source: str = SOURCE, owner: str = "DoseSegWidget") -> str:
    """Source of a method of class ``owner`` in ``source`` (a DoseSegWidget method by default)."""
    tree = ast.parse(source)
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner)
    return ast.unparse(next(n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == name))


def _function(name: str) -> str:
    """Source of a function of DoseSegWidgetLib/panelfields.py."""
    tree = ast.parse(FIELDS)
    return ast.unparse(next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name))


def _results(name: str) -> str:
    """Source of a PanelResults method (DoseSegWidgetLib/panelfields.py)."""
    return _method(name, FIELDS, "PanelResults")


def test_run_all_reuses_the_predicted_dose_node():
    """(Cancel, cleanup, opacity and the buttons are tested by behaviour: test_mrml_widget_behaviour.py.)"""
    assert "p.predictedDose, self.logic.newRunFolder(p.ctVolume)" in _method("onRunAll")


def test_every_cli_option_of_a_patient_reaches_the_steps():
    """The panel's fields become one PatientOptions, passed to every step (no step reads a field of its own)."""
    assert "panelfields.stepOptions(self._parameterNode)" in _method("_options")
    options = _function("patientOptions")
    for field in ("p.prescriptions", "p.namesFile", "p.goalsTable", "p.goalsFile", "p.dvhMethod", "p.dvhStep",
                  "p.device", "p.mirrorAveraging", "p.anySite", "p.uncertainty"):
        assert field in options, field
    for action in ("onAlign", "onSegment", "onPredict", "onRadiomics", "onRunAll", "onDvh"):
        assert "self._options()" in _method(action), action
    assert "self._startJob(False" in _method("onDvh") and "startComputeDvh(" in _method("onDvh"), \
        "Compute DVH runs in the background: a clinical CT never freezes the GUI"
    assert "panelfields.fillPrescriptions(self._parameterNode, slicer.mrmlScene, segmentationNode)" in \
        _method("onSegmentationChanged")
    assert "sceneinputs.knownPrescriptions(scene, segmentationNode)" in _function("fillPrescriptions")
    assert "sceneinputs.rememberPrescriptions(p.segmentation, options.prescriptions)" in _function("stepOptions")
    assert "options = patientOptions(p)" in _function("stepOptions")


def test_selectors_default_to_a_ct_and_filter_doses():
    setup, init = _method("setup"), _function("fillInputs")
    assert "panelfields.fillInputs(self._parameterNode, slicer.mrmlScene)" in _method("initializeParameterNode")
    for selector in ("referenceDoseSelector", "predictedDoseSelector"):
        assert f"self.ui.{selector}.addAttribute('vtkMRMLScalarVolumeNode', 'DicomRtImport.DoseVolume', '1')" \
            in setup, selector
    assert "sceneinputs.firstCtVolume(scene)" in init and "GetFirstNodeByClass('vtkMRMLScalarVolumeNode')" \
        not in init
    assert "sceneinputs.doseVolumes(scene)" in init


def test_run_all_shows_applicability_warnings_and_plan_qa():
    show = _results("showRunAll")
    assert "self.ui.applicabilityLabel.text = '\\n'.join(outputs['messages'])" in show
    assert "self.ui.applicabilityLabel.visible = bool(outputs['messages'])" in show
    assert "p.planQaTable = outputs['planQa']" in show
    assert "self.ui.planQaTableView.setMRMLTableNode(p.planQaTable)" in _method("updateGui")


def test_isodose_needs_a_prescription():
    assert "prescription = self.prescription()" in _results("showDose")
    assert "if prescription:" in _results("showDose")
    assert re.search(r"def showIsodose\(self, doseNode, prescription=None\).*?if not prescription:\s+raise", SOURCE,
                     re.DOTALL)


def test_slicerrt_isodose_terminology_and_comparison_are_wired():
    assert "self.logic.showIsodose(doseNode, prescription)" in _results("showDose")
    assert "p.comparisonTable = outputs['comparison']" in _results("showRunAll")
    assert 'if not hasattr(slicer.modules, "isodose"):' in SOURCE and "CreateIsodoseSurfaces(parameters)" in SOURCE
    assert "LoadTerminologyFromFile(str(TERMINOLOGY_FILE))" in SOURCE
    assert "comparisonTableView" in _widgets()


# -- catalogue -----------------------------------------------------------------------------------------------------


def test_catalogue_metadata_license_and_no_missing_screenshot():
    top = (REPO / "CMakeLists.txt").read_text()
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in license_text
    assert 'license = { text = "BSD-3-Clause" }' in (REPO / "pyproject.toml").read_text()
    screenshots = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]*)"\)', top).group(1).split()
    prefix = "https://raw.githubusercontent.com/DoseSeg/DoseSeg/main/"
    for url in screenshots:
        assert (REPO / url.removeprefix(prefix)).is_file(), f"screenshot URL to a missing file: {url}"
    icon = re.search(r'set\(EXTENSION_ICONURL "([^"]*)"\)', top).group(1)
    assert (REPO / icon.removeprefix(prefix)).is_file()
    docs = (REPO / "docs" / "slicer.md").read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", docs):
        assert (REPO / "docs" / image).resolve().is_file(), f"docs/slicer.md shows a missing picture: {image}"


def test_translation_markers_help_link_and_sample_data():
    assert "from slicer.i18n import tr as _" in SOURCE
    module = next(n for n in ast.parse(SOURCE).body if isinstance(n, ast.ClassDef) and n.name == "DoseSeg")
    init = ast.unparse(module)
    assert "self.parent.title = _('DoseSeg')" in init
    assert "translate('qSlicerAbstractCoreModule', 'Radiotherapy')" in init
    assert "self.parent.helpText = _(" in init and "<a href=" in init and "DOCUMENTATION_URL" in init
    assert "self.parent.acknowledgementText = _(" in init
    assert "slicer.app.connect('startupCompleted()', registerSampleData)" in init
    assert re.search(r"registerCustomSampleDataSource\(.*?customDownloader=lambda source: sample\.loadPhantom",
                     SOURCE, re.DOTALL)
    assert not re.search(r'([sS]tatusLabel\.text\s*=|errorDisplay\(|tryWithErrorDisplay\()\s*f?"[A-Za-z]',
                         SOURCE + PANEL + FIELDS), \
        "user-facing messages go through _()"


def test_one_dialog_for_every_package_and_an_old_torch_stops():
    ensure = _method("_ensurePackages")
    assert ensure.count("confirmOkCancelDisplay") == 1 and "requirement.describe()" in ensure
    assert "requirements.torchTooOld(unmet)" in ensure and "askConfirmation=False" in ensure
    assert "pydeps.load_requirements(str(requirements.REQUIREMENTS_FILE))" in SOURCE
    assert "import slicer.pydeps as pydeps" in SOURCE and "slicer.packaging" not in SOURCE, "Slicer's module name"
    assert "requirements.offlineProblem()" in SOURCE, "a clear message offline, before pip"
    assert "pydeps.pip_ensure(" in SOURCE and "slicer.util.pip_install(" in SOURCE
    assert "PACKAGES = {" not in SOURCE, "the requirements live in Resources/requirements.txt"


# -- What-if section -----------------------------------------------------------------------------------------------


def _panel_method(name: str) -> str:
    """Source of a WhatIfPanel method."""
    panel = next(n for n in ast.parse(PANEL).body if isinstance(n, ast.ClassDef) and n.name == "WhatIfPanel")
    return ast.unparse(next(n for n in panel.body if isinstance(n, ast.FunctionDef) and n.name == name))


def test_what_if_section_holds_its_widgets():
    section = _widgets()["whatIfCollapsibleButton"]
    assert section.get("class") == "ctkCollapsibleButton"
    assert section.findtext("property[@name='text']/string") == "What-if"
    inside = {w.get("name"): w.get("class") for w in section.iter("widget")}
    assert {name: inside.get(name) for name in (
        "whatIfStartButton", "whatIfDebounceSpinBox", "whatIfStatusLabel", "sensitivityStructureComboBox",
        "sensitivityMetricComboBox", "sensitivityWrtComboBox", "sensitivityButton")} == {
        "whatIfStartButton": "QPushButton", "whatIfDebounceSpinBox": "QDoubleSpinBox", "whatIfStatusLabel": "QLabel",
        "sensitivityStructureComboBox": "QComboBox", "sensitivityMetricComboBox": "QComboBox",
        "sensitivityWrtComboBox": "QComboBox", "sensitivityButton": "QPushButton"}
    start = _widgets()["whatIfStartButton"]
    assert start.findtext("property[@name='checkable']/bool") == "true", "Start/Stop is one toggle"
    bound = {w.get("name"): w.findtext("property[@name='SlicerParameterName']/string") for w in section.iter("widget")}
    assert bound["whatIfDebounceSpinBox"] == "whatIfDebounce"
    assert bound["sensitivityMetricComboBox"] == "sensitivityMetric"
    assert bound["sensitivityStructureComboBox"] is None and bound["sensitivityWrtComboBox"] is None, \
        "filled from the session's structures by the panel, not from the parameter node"


def test_sensitivity_metric_choices_are_what_the_session_differentiates():
    pytest.importorskip("torch")
    from DoseSegLib.models.dose.sensitivity import differentiable_metric

    choice = ast.parse(_parameter_fields()["sensitivityMetric"]).body[0].value
    choices = ast.literal_eval(next(n for n in ast.walk(choice) if isinstance(n, ast.List)))
    assert choices[0] == "Mean[Gy]" and len(choices) >= 2
    assert [differentiable_metric(c)[0] for c in choices] == choices
    kinds = {differentiable_metric(c)[2] for c in choices}
    assert kinds == {"mean", "pct", "cc"}, "mean and the near-maximum doses (D2%, D0.03cc)"


def test_what_if_panel_follows_the_panel_and_never_blocks():
    """Start/Stop, polling, scene close, cleanup and a dead worker are tested by behaviour
    (test_mrml_whatif_panel.py, test_mrml_widget_behaviour.py); what a stand-in cannot show stays here."""
    assert "self.whatIf.updateGui(p)" in _method("updateGui")
    for blocking in ("waitForUpdate", "waitForSensitivity", "time.sleep", "processEvents", ".wait("):
        assert blocking not in PANEL, f"the panel never blocks the GUI ({blocking})"
