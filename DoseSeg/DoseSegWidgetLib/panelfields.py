"""The panel's parameter-node fields: the inputs a scene fills in, the patient's options read from them, and the
results written back.

No Qt import (the widgets are only given values: text, visibility, current tab), so this runs on slicer-core
with stand-in widgets (Testing/test_mrml_widget_behaviour.py). Results may arrive after the panel was left:
they go to the logic's parameter node, never the GUI's connection to it.
"""

from DoseSegLogicLib import sceneinputs
from DoseSegLogicLib.options import PatientOptions, formatPrescriptions
from DoseSegLogicLib.pipeline import mainPrescription
from slicer.i18n import tr as _


def fillInputs(p, scene) -> None:
    """Empty inputs of parameter node ``p`` get the scene's planning CT (never a dose volume), its first
    segmentation and its first dose volume."""
    if not p.ctVolume:
        p.ctVolume = sceneinputs.firstCtVolume(scene)
    if not p.segmentation:
        p.segmentation = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    if not p.referenceDose:
        p.referenceDose = next(iter(sceneinputs.doseVolumes(scene)), None)


def fillPrescriptions(p, scene, segmentationNode) -> None:
    """Empty prescriptions get those of the RTPLAN SlicerRT loaded, or of the last run on the same study."""
    if segmentationNode and not p.prescriptions.strip():
        known = sceneinputs.knownPrescriptions(scene, segmentationNode)
        if known:
            p.prescriptions = formatPrescriptions(known)


def patientOptions(p) -> PatientOptions:
    """The command line's options for the patient, from the fields of parameter node ``p``."""
    return PatientOptions.fromPanel(
        p.prescriptions, p.namesFile, p.goalsTable, p.goalsFile, p.dvhMethod, p.dvhStep, p.device,
        p.mirrorAveraging, p.anySite, p.uncertainty, p.doseModel)


def stepOptions(p) -> PatientOptions:
    """:func:`patientOptions`, the prescriptions remembered on the segmentation's study: what a step gets."""
    options = patientOptions(p)
    if p.segmentation:
        sceneinputs.rememberPrescriptions(p.segmentation, options.prescriptions)
    return options


class PanelResults:
    """Shows a step's results: output fields of the logic's parameter node, chart, isodose lines, labels.

    Args:
        ui: the panel's widgets (``slicer.util.childWidgetVariables`` of DoseSeg.ui).
        logic: the module's DoseSegLogic (parameter node, dose display, chart, isodose lines).
    """

    def __init__(self, ui, logic) -> None:
        self.ui = ui
        self.logic = logic

    def prescription(self):
        """The primary target's prescription (Gy; :func:`mainPrescription`), or None: 100 % of the isodose lines,
        top of the dose colours."""
        return mainPrescription(patientOptions(self.logic.getParameterNode()))

    def showSegmentation(self, segmentationNode) -> None:
        self.logic.getParameterNode().segmentation = segmentationNode

    def showDose(self, doseNode) -> None:
        p = self.logic.getParameterNode()
        p.predictedDose = doseNode
        self.logic.setDoseOpacity(p.doseOpacity, doseNode)
        prescription = self.prescription()
        if prescription:
            self.logic.showIsodose(doseNode, prescription)
        else:  # isodose levels are percentages of a prescription: none is guessed
            self.ui.statusLabel.text = _("No isodose lines: give the prescriptions (e.g. PTV1=60) to show them.")

    def showDvh(self, chart, metrics, constraints) -> None:
        p = self.logic.getParameterNode()
        p.dvhChart = chart
        p.constraintsTable = constraints
        self.showTable(metrics, "metricsTable", 0)
        self.logic.showChart(chart)

    def showTable(self, table, parameter: str, tab: int) -> None:
        setattr(self.logic.getParameterNode(), parameter, table)
        self.ui.resultsTabWidget.currentIndex = tab

    def showRunAll(self, outputs: dict) -> None:
        self.showSegmentation(outputs["segmentation"])
        p = self.logic.getParameterNode()
        p.radiomicsTable = outputs["radiomics"]
        p.comparisonTable = outputs["comparison"]
        p.planQaTable = outputs["planQa"]
        self.showDose(outputs["dose"])
        self.showDvh(outputs["dvhChart"], outputs["metrics"], outputs["constraints"])
        self.ui.statusLabel.text = _("Run all: done; report and files in {folder}").format(folder=outputs["folder"])
        self.ui.applicabilityLabel.text = "\n".join(outputs["messages"])
        self.ui.applicabilityLabel.visible = bool(outputs["messages"])
