"""The What-if section's widget code (DoseSegWidgetLib/whatifpanel.py) run without Qt: stand-in ``qt``
timer, widgets and translation function, a real MRML scene (slicer-core) and a real worker.

What this covers: Start/Stop, the poll loop reaching the scene, the combo boxes, the Sensitivity button,
the stops on a patient change, a scene close, cleanup and a dead worker. What it cannot: real Qt signals
and widgets, the parameter-node GUI bindings and anything drawn (see docs/slicer.md's checklist).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import types
from types import SimpleNamespace

import mrml_helpers  # noqa: F401 (puts DoseSeg/ on sys.path)
import pytest
import slicer
from scipy import ndimage

pytest_plugins = ["mrml_fixtures"]

from DoseSegLogicLib import nodes


class Signal:
    def __init__(self) -> None:
        self.slots = []

    def connect(self, slot) -> None:
        self.slots.append(slot)


class Timer:
    """qt.QTimer's part the panel uses; ``fire`` stands for the event loop."""

    def __init__(self) -> None:
        self.timeout, self.active, self.interval = Signal(), False, None

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def fire(self) -> None:
        if self.active:
            for slot in self.timeout.slots:
                slot()


def _call(slot, *args) -> None:
    """As PythonQt calls a slot: with as many of the signal's arguments as it takes."""
    slot(*args[: len(inspect.signature(slot).parameters)])


class Widget:
    def __init__(self) -> None:
        self.text, self.enabled, self.checked, self.blocked, self.signals = "", True, False, False, {}

    def connect(self, signal: str, slot) -> None:
        self.signals[signal] = slot

    def blockSignals(self, blocked: bool) -> None:
        self.blocked = blocked

    def toggle(self) -> None:
        """A click on a checkable button."""
        self.checked = not self.checked
        if not self.blocked:
            _call(self.signals["toggled(bool)"], self.checked)

    def click(self) -> None:
        assert self.enabled, "a disabled button cannot be clicked"
        _call(self.signals["clicked(bool)"], False)


class Combo(Widget):
    def __init__(self) -> None:
        super().__init__()
        self.items, self.currentIndex = [], -1

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def currentText(self) -> str:
        return self.items[self.currentIndex] if 0 <= self.currentIndex < len(self.items) else ""

    def itemText(self, index: int) -> str:
        return self.items[index]

    def clear(self) -> None:
        self.items, self.currentIndex = [], -1

    def addItems(self, items) -> None:
        self.items += list(items)
        self.currentIndex = 0 if self.currentIndex < 0 and self.items else self.currentIndex

    def findText(self, text: str) -> int:
        return self.items.index(text) if text in self.items else -1

    def setCurrentIndex(self, index: int) -> None:
        self.currentIndex = index


@pytest.fixture
def panel_module(monkeypatch, scene):
    """whatifpanel imported with the stand-ins; errors shown by Slicer's dialog are collected in ``errors``."""
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=Timer, Qt=SimpleNamespace(WaitCursor=0)))
    monkeypatch.setitem(sys.modules, "slicer.i18n", types.SimpleNamespace(tr=lambda text: text))
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    app = SimpleNamespace(setOverrideCursor=lambda cursor: None, restoreOverrideCursor=lambda: None,
                          testingEnabled=lambda: False)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    errors = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: errors.append(text))
    sys.modules.pop("DoseSegWidgetLib.whatifpanel", None)
    module = importlib.import_module("DoseSegWidgetLib.whatifpanel")
    module.errors = errors
    yield module
    sys.modules.pop("DoseSegWidgetLib.whatifpanel", None)


@pytest.fixture
def panel(panel_module, loaded):
    ct, _, segmentation = loaded
    p = SimpleNamespace(ctVolume=ct, segmentation=segmentation, whatIfDebounce=0.1, device="cpu",
                        sensitivityMetric="Mean[Gy]", dvhChart=None, metricsTable=None, constraintsTable=None)
    charts = []
    logic = SimpleNamespace(getParameterNode=lambda: p, showChart=charts.append)
    ui = SimpleNamespace(whatIfStartButton=Widget(), whatIfStatusLabel=Widget(), sensitivityButton=Widget(),
                         sensitivityStructureComboBox=Combo(), sensitivityWrtComboBox=Combo(),
                         resultsTabWidget=SimpleNamespace(currentIndex=2))
    packages = []
    panel = panel_module.WhatIfPanel(ui, logic, lambda withModels: packages.append(withModels) or True)
    panel.p, panel.charts, panel.packages = p, charts, packages
    yield panel
    panel.cleanup()


def _poll_until(panel, condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        panel.timer.fire()
        time.sleep(0.05)
    assert condition(), panel.ui.whatIfStatusLabel.text


def test_start_edit_sensitivity_and_stops(panel, panel_module, scene, phantom, torch_in_workers):
    ui, p = panel.ui, panel.p
    panel.updateGui(p)
    assert ui.whatIfStartButton.enabled and not ui.sensitivityButton.enabled
    ui.whatIfStartButton.toggle()
    whatIf = panel.whatIf
    assert whatIf is not None and panel.timer.active and panel.packages == [True]
    assert ui.whatIfStartButton.text == "Stop" and ui.whatIfStartButton.checked
    assert ui.whatIfStatusLabel.text == "" and panel.timer.interval == panel_module.POLL_MS
    panel.timer.fire()
    assert ui.whatIfStatusLabel.text.startswith("Starting")
    _poll_until(panel, lambda: whatIf.updates == 1)
    assert ui.whatIfStatusLabel.text.startswith("Updated") and "1 updates" in ui.whatIfStatusLabel.text
    assert (p.dvhChart, p.metricsTable, p.constraintsTable) == (whatIf.chartNode, whatIf.metricsTable,
                                                                 whatIf.constraintsTable)
    assert panel.charts == [whatIf.chartNode] and ui.resultsTabWidget.currentIndex == 0
    assert ui.sensitivityStructureComboBox.items == whatIf.structures
    assert ui.sensitivityWrtComboBox.items == ["the same structure", *whatIf.structures]

    grown = phantom.ct.with_array(ndimage.binary_dilation(phantom.structures["PTV70"].array, iterations=2))
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        nodes._orientedImage(grown), p.segmentation,
        p.segmentation.GetSegmentation().GetSegmentIdBySegmentName("PTV70"),
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    panel.timer.fire()
    assert ui.whatIfStatusLabel.text.startswith("predicting")
    _poll_until(panel, lambda: whatIf.updates == 2)
    assert panel.charts == [whatIf.chartNode], "the chart is brought into the layout once"

    combo, wrt = ui.sensitivityStructureComboBox, ui.sensitivityWrtComboBox
    combo.setCurrentIndex(combo.findText("LeftParotid"))
    wrt.setCurrentIndex(wrt.findText("PTV70"))
    ui.sensitivityButton.click()
    assert whatIf.sensitivityRequest["structure"] == "LeftParotid" and whatIf.sensitivityRequest["wrt"] == "PTV70"
    assert not ui.sensitivityButton.enabled, "one map at a time"
    _poll_until(panel, lambda: whatIf.sensitivityNode is not None)
    assert whatIf.sensitivityNode.GetName() == "Sensitivity Mean[Gy] LeftParotid wrt PTV70"
    assert ui.sensitivityButton.enabled

    ui.whatIfStartButton.toggle()  # Stop
    assert panel.whatIf is None and not panel.timer.active and whatIf.worker.process.poll() is not None
    assert ui.whatIfStartButton.text == "Start" and ui.whatIfStatusLabel.text == "What-if stopped."
    assert ui.whatIfStartButton.enabled, "Start again is possible"

    ui.whatIfStartButton.toggle()
    second = panel.whatIf
    p.segmentation = nodes.newSegmentationNode(scene, "Other structures", p.ctVolume)
    panel.updateGui(p)
    assert panel.whatIf is None and second.worker.process.poll() is not None, "another patient stops the worker"
    assert not ui.whatIfStartButton.checked and ui.whatIfStartButton.text == "Start"


def test_scene_close_cleanup_and_a_dead_worker_stop_it(panel, panel_module, scene):
    ui = panel.ui
    ui.whatIfStartButton.toggle()
    first = panel.whatIf
    scene.InvokeEvent(scene.StartCloseEvent)
    assert panel.whatIf is None and first.worker.process.poll() is not None and not ui.whatIfStartButton.checked

    ui.whatIfStartButton.toggle()
    second = panel.whatIf
    second.worker.process.kill()
    second.worker.process.wait()
    panel.timer.fire()
    assert panel.whatIf is None and not panel.timer.active and not ui.whatIfStartButton.checked
    assert "worker process ended" in panel_module.errors[-1]

    ui.whatIfStartButton.toggle()
    third = panel.whatIf
    panel.cleanup()
    assert panel.whatIf is None and third.worker.process.poll() is not None
    scene.InvokeEvent(scene.StartCloseEvent)  # observers removed: nothing happens


def test_a_start_that_fails_leaves_the_toggle_up(panel, panel_module, monkeypatch):
    def fail(*args):
        raise RuntimeError("no room for the temporary folder")

    monkeypatch.setattr(panel_module, "WhatIfLogic", fail)
    with pytest.raises(RuntimeError):
        panel.ui.whatIfStartButton.toggle()
    assert panel.whatIf is None and not panel.timer.active
    assert not panel.ui.whatIfStartButton.checked and panel.ui.whatIfStartButton.text == "Start"
    assert "What-if could not start." in panel_module.errors[-1]
