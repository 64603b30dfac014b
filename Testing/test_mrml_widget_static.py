"""Static checks of the Slicer module (Qt and slicer.app are absent here): .ui, widget names, CMake lists."""

from __future__ import annotations

import ast
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "DoseSeg"
UI = MODULE / "Resources" / "UI" / "DoseSeg.ui"
SOURCE = (MODULE / "DoseSeg.py").read_text()
QT_CLASSES = {"QWidget", "QLabel", "QPushButton", "QComboBox", "QDoubleSpinBox", "QProgressBar", "QTabWidget",
              "QCheckBox"}


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
    names = set(re.findall(r"self\.ui\.(\w+)", SOURCE))
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
        else:
            assert widget.get("class") in ("QDoubleSpinBox", "ctkSliderWidget"), parameter
    inputs = {"ctVolume", "segmentation", "referenceDose", "prescription", "device", "mirrorAveraging"}
    outputs = {"predictedDose", "dvhChart", "metricsTable", "constraintsTable", "radiomicsTable"}
    assert inputs | outputs <= set(bound)


def test_mrml_widgets_receive_the_scene():
    root = ET.parse(UI).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    mrml = {name for name, w in _widgets().items() if w.get("class", "").startswith("qMRML") and name != "DoseSeg"}
    assert mrml == receivers


def test_actions_progress_and_cancel_are_wired():
    buttons = {"alignButton", "segmentButton", "predictButton", "dvhButton", "radiomicsButton", "runAllButton",
               "cancelButton"}
    for button in buttons:
        assert re.search(rf"self\.ui\.{button}\.connect\(\"clicked\(bool\)\"", SOURCE), button
    assert "self.ui.progressBar" in SOURCE


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
