"""The What-if section of the DoseSeg panel: Start/Stop of the live loop, its status, and the Sensitivity button.

Qt side only. The scene side (the worker process, the debounce of segment edits, the dose node, DVH
curves and tables, the sensitivity overlay) is DoseSegLogicLib.whatif and DoseSegLogicLib.sensitivity,
tested on slicer-core; this class wires them to the widgets of DoseSeg.ui and drives them from a timer,
so the GUI never waits for the worker. One worker at a time; it stops on Stop, when the CT or the
segmentation changes, on scene close and on module cleanup.
"""

import logging

import qt
import slicer
from DoseSegLogicLib.whatif import WhatIfLogic
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

POLL_MS = 100  # the worker's replies are picked up (and debounced edits sent) this often
SAME_STRUCTURE = 0  # index of "the same structure" in the "with respect to" combo box


def _same(node, other) -> bool:
    return node is not None and other is not None and node.GetID() == other.GetID()


class WhatIfPanel(VTKObservationMixin):
    """Drives a WhatIfLogic from the panel.

    Args:
        ui: the panel's widgets (``slicer.util.childWidgetVariables`` of DoseSeg.ui).
        logic: the module's DoseSegLogic (parameter node, chart display).
        ensurePackages: called with ``withModels=True`` before starting; False stops the start.
    """

    def __init__(self, ui, logic, ensurePackages) -> None:
        VTKObservationMixin.__init__(self)
        self.ui = ui
        self.moduleLogic = logic
        self.ensurePackages = ensurePackages
        self.whatIf = None
        self.chartShown = False
        self.error = ""
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.onPoll)
        self.ui.whatIfStartButton.connect("toggled(bool)", self.onStartToggled)
        self.ui.sensitivityButton.connect("clicked(bool)", self.onSensitivity)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)

    def cleanup(self) -> None:
        """Module cleanup (Slicer closes or the module is reloaded): end the worker, drop the observers
        (the widgets and the scene are going away: nothing else is touched)."""
        self._closeWorker()
        self.removeObservers()

    def onSceneStartClose(self, caller=None, event=None) -> None:
        self.stop()

    def onStartToggled(self, checked: bool) -> None:
        if checked:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        """Start the worker on the panel's CT and segmentation (the toggle goes back up when it cannot)."""
        p = self.moduleLogic.getParameterNode()
        try:
            if self.whatIf is None and p.ctVolume and p.segmentation and self.ensurePackages(True):
                with slicer.util.tryWithErrorDisplay(_("What-if could not start."), waitCursor=True):
                    self.whatIf = WhatIfLogic(p.ctVolume, p.segmentation, p.whatIfDebounce, p.device)
                    self.chartShown, self.error = False, ""
                    self.timer.start()
        finally:  # the dialog has shown the error (and re-raises it): the toggle goes back up
            self._setChecked(self.whatIf is not None)
            self.updateGui(p)

    def stop(self) -> None:
        """Stop the worker (it exits, its temporary folder is deleted); the scene's nodes stay."""
        if self._closeWorker():
            self.ui.whatIfStatusLabel.text = _("What-if stopped.")
        self._setChecked(False)
        self.updateGui()

    def _closeWorker(self) -> bool:
        """Stop polling and end the worker; whether there was one."""
        self.timer.stop()
        whatIf, self.whatIf = self.whatIf, None
        if whatIf is not None:
            whatIf.close()
        return whatIf is not None

    def _setChecked(self, checked: bool) -> None:
        self.ui.whatIfStartButton.blockSignals(True)
        self.ui.whatIfStartButton.checked = checked
        self.ui.whatIfStartButton.blockSignals(False)
        self.ui.whatIfStartButton.text = _("Stop") if checked else _("Start")

    def updateGui(self, p=None) -> None:
        """Enable the buttons; stop when the panel's CT or segmentation (of parameter node ``p``, the module's
        when None) is no longer the one of the worker."""
        p = self.moduleLogic.getParameterNode() if p is None else p
        whatIf = self.whatIf
        samePatient = whatIf is not None and _same(p.ctVolume, whatIf.ctNode) and _same(p.segmentation,
                                                                                         whatIf.segmentationNode)
        if whatIf is not None and not samePatient:
            self.stop()
            return
        running = whatIf is not None
        self.ui.whatIfStartButton.enabled = running or (bool(p.ctVolume) and bool(p.segmentation))
        self.ui.sensitivityButton.enabled = running and bool(whatIf.structures) and whatIf.sensitivityRequest is None

    def onPoll(self) -> None:
        """Timer: send debounced edits, show what the worker answered, and say where the loop stands."""
        whatIf = self.whatIf
        if whatIf is None:
            return
        try:
            updated = whatIf.poll()
        except Exception as error:
            logging.getLogger("DoseSeg").exception("what-if stopped")
            self.stop()
            slicer.util.errorDisplay(_("What-if stopped: {error}").format(error=error))
            return
        if updated:
            self._showResults(whatIf)
        error = whatIf.takeError()
        if error:
            self.error = error
        self._fillStructures(whatIf.structures)
        self.ui.whatIfStatusLabel.text = self._status(whatIf)
        self.updateGui()

    def _showResults(self, whatIf) -> None:
        """The latest tables and chart in the panel; the chart in the layout the first time."""
        p = self.moduleLogic.getParameterNode()
        p.dvhChart, p.metricsTable, p.constraintsTable = whatIf.chartNode, whatIf.metricsTable, whatIf.constraintsTable
        if not self.chartShown:
            self.moduleLogic.showChart(whatIf.chartNode)
            self.ui.resultsTabWidget.currentIndex = 0
            self.chartShown = True

    def _status(self, whatIf) -> str:
        if not whatIf.structures and whatIf.updates == 0:
            text = _("Starting: loading the model and the patient...")
        elif whatIf.busy:
            text = _("predicting...")
        elif whatIf.latency is not None:
            text = _("Updated {seconds:.1f} s after the edit (network {network:.1f} s); {count} updates.").format(
                seconds=whatIf.latency, network=whatIf.predictSeconds, count=whatIf.updates)
        else:
            text = _("Waiting for the worker...")
        if whatIf.sensitivityRequest is not None:
            text += " " + _("Sensitivity map: computing...")
        if self.error:
            text += "\n" + _("Last error: {error}").format(error=self.error)
        return text

    def _fillStructures(self, structures: list) -> None:
        """The session's structures in both structure combo boxes (kept when unchanged)."""
        combo = self.ui.sensitivityStructureComboBox
        if [combo.itemText(index) for index in range(combo.count)] == list(structures):
            return
        for box, first in ((combo, []), (self.ui.sensitivityWrtComboBox, [_("the same structure")])):
            current = box.currentText
            box.clear()
            box.addItems(first + list(structures))
            if current in structures:
                box.setCurrentIndex(box.findText(current))

    def onSensitivity(self) -> None:
        """Ask the worker for the sensitivity map of the chosen structure and metric; onPoll shows it."""
        whatIf = self.whatIf
        structure = self.ui.sensitivityStructureComboBox.currentText
        wrt = None
        if self.ui.sensitivityWrtComboBox.currentIndex != SAME_STRUCTURE:
            wrt = self.ui.sensitivityWrtComboBox.currentText
        metric = self.moduleLogic.getParameterNode().sensitivityMetric
        with slicer.util.tryWithErrorDisplay(_("The sensitivity map could not be requested.")):
            self.error = ""
            whatIf.requestSensitivity(structure, metric, wrt)
        self.updateGui()
