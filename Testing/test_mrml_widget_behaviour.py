"""The panel's code (DoseSeg.py's Widget) run without Qt: stand-ins for the parts of Slicer that slicer-core
lacks (ScriptedLoadableModule, parameterNodeWrapper, i18n, slicer.app, qt widgets), the real MRML library.

What this covers: setup() wires each button, the slider and Cancel to their handlers, the what-if section
is built before the parameter node is read, Cancel never waits, cleanup stops the timer, the job and the
what-if worker. What it cannot: real Qt signals, the .ui bindings and drawing (test_mrml_widget_static.py
checks the .ui statically; docs/slicer.md has the manual checklist).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import mrml_helpers  # noqa: F401 (puts DoseSeg/ on sys.path)
import pytest
import slicer

pytest_plugins = ["mrml_fixtures"]

MODULE_FILE = Path(__file__).resolve().parents[1] / "DoseSeg" / "DoseSeg.py"


class Recorder:
    """Records the calls made to it (a stand-in method or callback)."""

    def __init__(self, log: list | None = None, name: str = "") -> None:
        self.calls: list[tuple] = []
        self.log, self.name = log, name

    def __call__(self, *args, **kwargs) -> None:
        self.calls.append(args)
        if self.log is not None:
            self.log.append(self.name)


class AnyWidget:
    """A Qt widget stand-in: ``connect`` records the slot of each signal; other methods do nothing."""

    def __init__(self) -> None:
        self.signals: dict[str, object] = {}

    def connect(self, signal: str, slot) -> None:
        self.signals[signal] = slot

    def emit(self, signal: str, *args) -> None:
        """As PythonQt calls a slot: with as many of the signal's arguments as it takes."""
        slot = self.signals[signal]
        try:
            taken = len(inspect.signature(slot).parameters)
        except (TypeError, ValueError):
            taken = len(args)
        slot(*args[:taken])

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


class AnyUi:
    """``slicer.util.childWidgetVariables``: one widget stand-in per name asked for."""

    def __getattr__(self, name: str) -> AnyWidget:
        if name.startswith("__"):
            raise AttributeError(name)
        widget = AnyWidget()
        setattr(self, name, widget)
        return widget


class Signal:
    def __init__(self) -> None:
        self.slots: list = []

    def connect(self, slot) -> None:
        self.slots.append(slot)


class Timer:
    """qt.QTimer's part the panel uses."""

    def __init__(self) -> None:
        self.timeout, self.active = Signal(), False

    def setInterval(self, ms: int) -> None:
        pass

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


class Base:
    """ScriptedLoadableModule's base classes, reduced to what the Widget calls."""

    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.layout = AnyWidget()

    def setup(self) -> None:
        pass

    def resourcePath(self, relative: str) -> str:
        return str(MODULE_FILE.parent / "Resources" / relative)


def _fake(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture
def module(monkeypatch):
    """DoseSeg.py imported with the stand-ins (as in Slicer 5.10)."""
    identity = lambda cls=None, *args, **kwargs: cls  # noqa: E731 (decorators and annotations)
    fakes = {
        "qt": _fake("qt", QTimer=Timer, QLabel=lambda text: AnyWidget(), Qt=SimpleNamespace(WaitCursor=0)),
        "slicer.i18n": _fake("slicer.i18n", tr=lambda text: text, translate=lambda context, text: text),
        "slicer.parameterNodeWrapper": _fake("slicer.parameterNodeWrapper", parameterNodeWrapper=identity,
                                             Choice=identity, WithinRange=identity),
        "slicer.ScriptedLoadableModule": _fake(
            "slicer.ScriptedLoadableModule", ScriptedLoadableModule=Base, ScriptedLoadableModuleLogic=Base,
            ScriptedLoadableModuleWidget=Base, ScriptedLoadableModuleTest=object),
    }
    for name, fake in fakes.items():
        monkeypatch.setitem(sys.modules, name, fake)
    app = SimpleNamespace(majorVersion=5, minorVersion=10, connect=lambda *args: None,
                          setOverrideCursor=lambda cursor: None, restoreOverrideCursor=lambda: None)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: AnyWidget(), raising=False)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: AnyUi(), raising=False)
    sys.modules.pop("DoseSeg", None)
    loaded = importlib.import_module("DoseSeg")
    assert loaded.VERSION_PROBLEM is None
    yield loaded
    sys.modules.pop("DoseSeg", None)


@pytest.fixture
def widget(module, monkeypatch, scene):
    """A set-up panel whose Logic, what-if section and parameter node are recorders (their own tests elsewhere)."""
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    order: list[str] = []
    monkeypatch.setattr(module, "DoseSegLogic", lambda: SimpleNamespace(setDoseOpacity=Recorder()))
    monkeypatch.setattr(module, "WhatIfPanel", lambda ui, logic, ensure: (
        order.append("what-if section"), SimpleNamespace(cleanup=Recorder(), ui=ui, logic=logic, ensure=ensure))[1])
    for handler in ("onAlign", "onSegment", "onPredict", "onDvh", "onRadiomics", "onRunAll", "onShowChart",
                    "onInstallDependencies", "onSegmentationChanged", "initializeParameterNode", "updateGui"):
        monkeypatch.setattr(module.DoseSegWidget, handler, Recorder(order, handler))
    panel = module.DoseSegWidget()
    panel.setup()
    panel.order = order
    yield panel
    module.VTKObservationMixin.removeObservers(panel)  # the scene outlives no observer of a test's panel


@pytest.mark.parametrize(("button", "handler"), [
    ("alignButton", "onAlign"), ("segmentButton", "onSegment"), ("predictButton", "onPredict"),
    ("dvhButton", "onDvh"), ("radiomicsButton", "onRadiomics"), ("runAllButton", "onRunAll"),
    ("showChartButton", "onShowChart"), ("installDependenciesButton", "onInstallDependencies"),
])
def test_each_button_runs_its_action(widget, button: str, handler: str) -> None:
    before = len(getattr(type(widget), handler).calls)
    getattr(widget.ui, button).emit("clicked(bool)", False)
    assert len(getattr(type(widget), handler).calls) == before + 1


def test_the_what_if_section_is_built_before_the_parameter_node_is_read(widget) -> None:
    assert widget.order.index("what-if section") < widget.order.index("initializeParameterNode")
    assert widget.whatIf.ui is widget.ui and widget.whatIf.logic is widget.logic
    assert widget.whatIf.ensure == widget._ensurePackages


def test_cancel_asks_the_job_to_stop_and_returns_at_once(widget) -> None:
    job = SimpleNamespace(cancel=Recorder())  # no wait(): a Cancel that waited would fail here
    widget._job = job
    widget.ui.cancelButton.emit("clicked(bool)", False)
    assert len(job.cancel.calls) == 1
    assert "Cancelling" in widget.ui.statusLabel.text
    widget._job = None
    widget.ui.cancelButton.emit("clicked(bool)", False)  # nothing running: nothing to do
    assert len(job.cancel.calls) == 1


def test_cleanup_stops_the_timer_the_job_and_the_what_if_worker(widget, monkeypatch) -> None:
    job = SimpleNamespace(cancel=Recorder())
    widget._job = job
    widget._timer.start()
    removed = Recorder()
    monkeypatch.setattr(widget, "removeObservers", removed)
    widget.cleanup()
    assert not widget._timer.active, "a reload during a job must not poll deleted widgets"
    assert len(job.cancel.calls) == 1 and len(widget.whatIf.cleanup.calls) == 1 and len(removed.calls) == 1


@pytest.mark.parametrize("predicted", [True, False])
def test_dose_opacity_applies_to_the_predicted_dose_else_the_reference(widget, predicted: bool) -> None:
    widget._parameterNode = SimpleNamespace(predictedDose="predicted" if predicted else None,
                                            referenceDose="reference")
    widget.ui.doseOpacitySlider.emit("valueChanged(double)", 0.3)
    assert widget.logic.setDoseOpacity.calls == [(0.3, "predicted" if predicted else "reference")]


# -- the patient's options, prescriptions, results banner (the handlers themselves, on a SlicerRT-like scene) --


@pytest.fixture
def handlers(module, monkeypatch, rt_study):
    """A panel without setup(): its real handlers, a recording Logic, the parameter node as plain fields."""
    monkeypatch.setattr(slicer, "mrmlScene", rt_study.ct.GetScene(), raising=False)
    panel = module.DoseSegWidget.__new__(module.DoseSegWidget)
    panel.ui = AnyUi()
    panel.jobs = []
    parameters = SimpleNamespace(
        ctVolume=rt_study.ct, segmentation=rt_study.segmentation, referenceDose=rt_study.dose, predictedDose=None,
        prescriptions="", namesFile=Path("."), goalsTable="prostate", goalsFile=Path(""), dvhMethod="voxel",
        dvhStep=0.5, device="cpu", mirrorAveraging=True, anySite=True, uncertainty=True, doseModel="", doseOpacity=0.5,
        radiomicsTable=None, comparisonTable=None, planQaTable=None, dvhChart=None, constraintsTable=None,
        metricsTable=None)
    panel._parameterNode = parameters
    panel.logic = SimpleNamespace(
        startRunAll=lambda *args: ("runAll", args), startComputeDvh=lambda *args, **kwargs: ("dvh", args, kwargs),
        newRunFolder=lambda ct: "/out", getParameterNode=lambda: parameters, setDoseOpacity=Recorder(),
        showIsodose=Recorder(), showChart=Recorder())
    panel._startJob = lambda withModels, start, onResult: panel.jobs.append((withModels, start(), onResult))
    panel.results = module.PanelResults(panel.ui, panel.logic)
    return panel


def test_run_all_takes_every_option_of_the_panel(handlers, rt_study) -> None:
    handlers._parameterNode.prescriptions = "PTV1=60"
    handlers.onRunAll()
    withModels, (name, args), _ = handlers.jobs[-1]
    assert withModels and name == "runAll" and args[:3] == (rt_study.ct, rt_study.segmentation, rt_study.dose)
    options = args[3]
    assert (options.prescriptions, options.goalsFile, options.dvhMethod, options.dvhStep, options.device) == (
        {"PTV1": 60.0}, "prostate", "voxel", 0.5, "cpu")
    assert options.mirrorAveraging and options.anySite and options.uncertainty and options.namesFile is None
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(rt_study.ct.GetScene())
    assert shNode.GetItemAttribute(rt_study.study, "DoseSeg.Prescriptions") == "PTV1=60", "remembered on the study"


def test_compute_dvh_runs_in_the_background_with_the_options(handlers, rt_study) -> None:
    handlers.onDvh()
    withModels, (name, args, kwargs), _ = handlers.jobs[-1]
    assert not withModels and name == "dvh" and args == (rt_study.dose, rt_study.segmentation)
    assert kwargs["ctNode"] is rt_study.ct and kwargs["options"].dvhMethod == "voxel"


def test_empty_prescriptions_are_filled_from_the_study(handlers, rt_study) -> None:
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(rt_study.ct.GetScene())
    shNode.SetItemAttribute(rt_study.study, "DoseSeg.Prescriptions", "PTV1=66")
    handlers.onSegmentationChanged(rt_study.segmentation)
    assert handlers._parameterNode.prescriptions == "PTV1=66"
    handlers._parameterNode.prescriptions = "PTV1=50"  # the user's own text is never replaced
    handlers.onSegmentationChanged(rt_study.segmentation)
    assert handlers._parameterNode.prescriptions == "PTV1=50"


def test_run_all_results_show_the_banner_and_no_isodose_without_prescription(handlers, rt_study) -> None:
    outputs = {"segmentation": rt_study.segmentation, "radiomics": None, "comparison": None, "planQa": "qa",
               "dose": "dose", "dvhChart": "chart", "metrics": "metrics", "constraints": "goals", "folder": "/out",
               "messages": ["Outside the models' experience: site", "w1"]}
    handlers.results.showRunAll(outputs)
    assert handlers.ui.applicabilityLabel.visible and handlers.ui.applicabilityLabel.text.count("\n") == 1
    assert handlers._parameterNode.planQaTable == "qa"
    assert handlers.logic.showIsodose.calls == [], "isodose levels are percentages of a prescription: none given"
    handlers._parameterNode.prescriptions = "PTV1=60"
    handlers.results.showRunAll(outputs | {"messages": []})
    assert handlers.logic.showIsodose.calls == [("dose", 60.0)] and not handlers.ui.applicabilityLabel.visible


def test_a_dose_arriving_after_the_panel_was_left_is_shown_with_its_isodose_lines(handlers) -> None:
    """Leaving the module disconnects the panel from its parameter node while a step may still run: its results
    (and the prescription for the isodose lines) go through the logic's parameter node."""
    handlers.logic.getParameterNode().prescriptions = "PTV1=60"
    handlers._parameterNode = None  # exit()
    handlers.results.showDose("dose")
    assert handlers.logic.getParameterNode().predictedDose == "dose"
    assert handlers.logic.showIsodose.calls == [("dose", 60.0)]
    assert handlers.logic.setDoseOpacity.calls == [(0.5, "dose")]


def test_the_panel_fields_module_is_qt_free() -> None:
    """It runs on slicer-core (these tests): no qt, ctk or slicer.app."""
    text = (MODULE_FILE.parent / "DoseSegWidgetLib" / "panelfields.py").read_text()
    assert not re.search(r"^\s*(import|from) (qt|ctk)\b|slicer\.app\b", text, re.MULTILINE)
