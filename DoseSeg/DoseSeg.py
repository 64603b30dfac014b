"""DoseSeg: dose prediction, OAR auto-segmentation, DVH and radiomics for radiotherapy planning research."""

import logging
import os
import pathlib
import sys
import time
from typing import Annotated

import qt
import slicer
import vtk
from DoseSegLogicLib.compat import versionProblem
from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DOCUMENTATION_URL = "https://github.com/DoseSeg/DoseSeg/blob/main/docs/slicer.md"

# Checked before DoseSegLib is imported: on an older Slicer the module loads and says what to do.
VERSION_PROBLEM = versionProblem((slicer.app.majorVersion, slicer.app.minorVersion), sys.version_info)
if VERSION_PROBLEM is None:
    from DoseSegLogicLib import doseunits, requirements, sample
    from DoseSegLogicLib.dependencies import radiomicsProblem
    from DoseSegLogicLib.pipeline import DoseSegJobError, DoseSegPipeline, fileName
    from DoseSegLogicLib.terminology import TERMINOLOGY_FILE
    from DoseSegTestLib import selftest
    from DoseSegWidgetLib import panelfields
    from DoseSegWidgetLib.panelfields import PanelResults
    from DoseSegWidgetLib.whatifpanel import WhatIfPanel
else:
    logging.getLogger("DoseSeg").error(VERSION_PROBLEM)
    DoseSegPipeline = DoseSegJobError = object  # never used: the panel and the logic stop at VERSION_PROBLEM


class DoseSeg(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DoseSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Radiotherapy")]
        self.parent.dependencies = []
        self.parent.contributors = ["DoseSeg developers"]
        self.parent.helpText = _(
            "Predicts the 3D dose a good plan would deliver from a CT and its structures, auto-segments the organs "
            "at risk a case lacks, and shows dose-volume histograms, DVH metrics, clinical-goal checks, isodose "
            "lines and radiomics features. Long steps run in a background process (Cancel stops them). For "
            "research use only: not for clinical decisions."
        ) + f' <a href="{DOCUMENTATION_URL}">' + _("DoseSeg in Slicer: documentation") + "</a>"
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SlicerRT conventions, MONAI, PyTorch and pyradiomics; dose model trained on the "
            "OpenKBP challenge data (Babier et al., Medical Physics 2021)."
        )
        if not VERSION_PROBLEM:
            slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """The synthetic phantom in the Sample Data module (category DoseSeg), generated locally on click."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="DoseSeg", sampleName=sample.SAMPLE_NAME, uris=[], fileNames=[], nodeNames=[],
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "DoseSeg.png"),
        customDownloader=lambda source: sample.loadPhantom(slicer.mrmlScene),
    )


@parameterNodeWrapper
class DoseSegParameterNode:
    """The module's inputs and outputs, saved with the scene."""

    ctVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    referenceDose: vtkMRMLScalarVolumeNode
    prescriptions: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    dvhStep: Annotated[float, WithinRange(0.01, 5.0)] = 0.1
    mirrorAveraging: bool = False
    namesFile: pathlib.Path
    goalsTable: Annotated[str, Choice(["head-and-neck", "prostate"])] = "head-and-neck"
    goalsFile: pathlib.Path
    dvhMethod: Annotated[str, Choice(["auto", "voxel"])] = "auto"
    anySite: bool = False
    uncertainty: bool = False
    doseModel: str = ""
    predictedDose: vtkMRMLScalarVolumeNode
    doseOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    dvhChart: vtkMRMLPlotChartNode
    metricsTable: vtkMRMLTableNode
    constraintsTable: vtkMRMLTableNode
    radiomicsTable: vtkMRMLTableNode
    comparisonTable: vtkMRMLTableNode
    planQaTable: vtkMRMLTableNode
    whatIfDebounce: Annotated[float, WithinRange(0.1, 5.0)] = 0.4
    sensitivityMetric: Annotated[str, Choice(["Mean[Gy]", "D2%[Gy]", "D0.03cc[Gy]"])] = "Mean[Gy]"


class DoseSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: inputs, actions with progress and Cancel, outputs."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._onJobResult = None
        self._radiomicsProblem = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPollJob)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if VERSION_PROBLEM:
            label = qt.QLabel(VERSION_PROBLEM)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DoseSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DoseSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.alignButton.connect("clicked(bool)", self.onAlign)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.predictButton.connect("clicked(bool)", self.onPredict)
        self.ui.dvhButton.connect("clicked(bool)", self.onDvh)
        self.ui.radiomicsButton.connect("clicked(bool)", self.onRadiomics)
        self.ui.runAllButton.connect("clicked(bool)", self.onRunAll)
        self._radiomicsProblem = radiomicsProblem()
        if self._radiomicsProblem:
            self.ui.radiomicsButton.toolTip = self._radiomicsProblem
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showChartButton.connect("clicked(bool)", self.onShowChart)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.doseOpacitySlider.connect("valueChanged(double)", self.onDoseOpacity)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        # SlicerRT's dose volumes only (DicomRtImport.DoseVolume), as its own dose selectors
        self.ui.referenceDoseSelector.addAttribute("vtkMRMLScalarVolumeNode", "DicomRtImport.DoseVolume", "1")
        self.ui.predictedDoseSelector.addAttribute("vtkMRMLScalarVolumeNode", "DicomRtImport.DoseVolume", "1")
        self.whatIf = WhatIfPanel(self.ui, self.logic, self._ensurePackages)
        self.results = PanelResults(self.ui, self.logic)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._timer.stop()
        if not VERSION_PROBLEM:
            self.onCancel()
            self.whatIf.cleanup()
        self.removeObservers()

    def enter(self) -> None:
        if not VERSION_PROBLEM:
            self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        panelfields.fillInputs(self._parameterNode, slicer.mrmlScene)
        self.onSegmentationChanged(self._parameterNode.segmentation)

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self.updateGui()

    def updateGui(self, caller=None, event=None) -> None:
        """Enable the actions whose inputs are set (none while a step runs); show the selected tables."""
        p = self._parameterNode
        if not p:
            return
        idle = self._job is None
        hasCt, hasSegments = bool(p.ctVolume), bool(p.segmentation)
        dose = p.predictedDose or p.referenceDose
        self.ui.alignButton.enabled = idle and hasCt and hasSegments
        self.ui.segmentButton.enabled = idle and hasCt
        self.ui.predictButton.enabled = idle and hasCt and hasSegments
        self.ui.dvhButton.enabled = idle and bool(dose) and hasSegments
        self.ui.radiomicsButton.enabled = idle and hasCt and hasSegments and self._radiomicsProblem is None
        self.ui.runAllButton.enabled = idle and hasCt and hasSegments
        self.ui.cancelButton.enabled = not idle and not self._job.cancelled
        self.ui.metricsTableView.setMRMLTableNode(p.metricsTable)
        self.ui.constraintsTableView.setMRMLTableNode(p.constraintsTable)
        self.ui.radiomicsTableView.setMRMLTableNode(p.radiomicsTable)
        self.ui.comparisonTableView.setMRMLTableNode(p.comparisonTable)
        self.ui.planQaTableView.setMRMLTableNode(p.planQaTable)
        self.whatIf.updateGui(p)

    # -- actions ---------------------------------------------------------------------------------------------------

    def onSegmentationChanged(self, segmentationNode) -> None:
        """Fill empty prescriptions from the RTPLAN SlicerRT loaded, or from the last run on the same study."""
        if self._parameterNode:
            panelfields.fillPrescriptions(self._parameterNode, slicer.mrmlScene, segmentationNode)

    def onAlign(self) -> None:
        p = self._parameterNode
        self._startJob(False, lambda: self.logic.startAlignStructures(p.ctVolume, p.segmentation, self._options()),
                       self.results.showSegmentation)

    def onSegment(self) -> None:
        p = self._parameterNode
        self._startJob(True, lambda: self.logic.startSegmentMissingOars(p.ctVolume, p.segmentation, self._options()),
                       self.results.showSegmentation)

    def onPredict(self) -> None:
        p = self._parameterNode
        self._startJob(True,
                       lambda: self.logic.startPredictDose(p.ctVolume, p.segmentation, self._options(),
                                                           p.predictedDose),
                       self.results.showDose)

    def onRadiomics(self) -> None:
        p = self._parameterNode
        self._startJob(False,
                       lambda: self.logic.startExtractRadiomics(p.ctVolume, p.segmentation, self._options()),
                       lambda table: self.results.showTable(table, "radiomicsTable", 2))

    def onRunAll(self) -> None:
        p = self._parameterNode
        self._startJob(True,
                       lambda: self.logic.startRunAll(p.ctVolume, p.segmentation, p.referenceDose, self._options(),
                                                      p.predictedDose, self.logic.newRunFolder(p.ctVolume)),
                       self.results.showRunAll)

    def onDvh(self) -> None:
        """Compute DVH in a background process (``doseseg dvh``: the GUI never freezes); a reference dose's
        curves follow, dashed."""
        p = self._parameterNode
        dose = p.predictedDose or p.referenceDose
        reference = p.referenceDose if p.predictedDose else None
        self._startJob(False,
                       lambda: self.logic.startComputeDvh(dose, p.segmentation, options=self._options(),
                                                          ctNode=p.ctVolume),
                       lambda outputs: self._showDvhOutputs(outputs, reference))

    def _showDvhOutputs(self, outputs: dict, reference=None) -> None:
        self.results.showDvh(outputs["dvhChart"], outputs["metrics"], outputs["constraints"])
        if reference is not None:
            p = self._parameterNode
            self._startJob(False,
                           lambda: self.logic.startComputeDvh(reference, p.segmentation, options=self._options(),
                                                              ctNode=p.ctVolume, label="reference "),
                           lambda referenceOutputs: self.logic.showChart(referenceOutputs["dvhChart"]))

    def onDoseOpacity(self, opacity: float) -> None:
        p = self._parameterNode
        self.logic.setDoseOpacity(opacity, p.predictedDose or p.referenceDose)

    def onShowChart(self) -> None:
        if self._parameterNode.dvhChart:
            self.logic.showChart(self._parameterNode.dvhChart)

    def onInstallDependencies(self) -> None:
        self._ensurePackages(withModels=True)

    def onCancel(self) -> None:
        if self._job is not None:
            self.ui.statusLabel.text = _("Cancelling: the step is cleaning up...")
            self._job.cancel()  # returns at once; onPollJob sees the end
            self.updateGui()

    # -- background job ----------------------------------------------------------------------------------------

    def _startJob(self, withModels: bool, start, onResult) -> None:
        """Check the packages (the models' too when ``withModels``), start the job and poll it from a timer;
        ``onResult`` gets its result."""
        if self._job is not None or not self._ensurePackages(withModels):
            return
        with slicer.util.tryWithErrorDisplay(_("The step could not start."), waitCursor=True):
            self._job = start()
            self._onJobResult = onResult
            self._timer.start()
            self.updateGui()

    def onPollJob(self) -> None:
        job = self._job
        try:
            done = job.poll()
        except DoseSegJobError as error:
            self._endJob()
            slicer.util.errorDisplay(str(error), detailedText=error.log)
            return
        except Exception as error:
            self._endJob()
            logging.getLogger("DoseSeg").exception("loading the results failed")
            message = _("{title}: loading the results failed: {error}").format(title=job.title, error=error)
            slicer.util.errorDisplay(message, detailedText=job.log)
            return
        if not done:
            self.ui.progressBar.setRange(0, 0 if job.progress is None else 100)
            self.ui.progressBar.value = int(job.progress or 0)
            state = _("cancelling, cleaning up") if job.cancelled else job.status
            self.ui.statusLabel.text = f"{job.title}: {state}"
            return
        self._endJob()
        self.ui.statusLabel.text = f"{job.title}: {_('cancelled') if job.cancelled else _('done')}"
        if job.result is not None:
            with slicer.util.tryWithErrorDisplay(_("Showing the results failed."), waitCursor=True):
                self._onJobResult(job.result)

    def _endJob(self) -> None:
        self._timer.stop()
        self._job = None
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = 0
        self.updateGui()

    def _ensurePackages(self, withModels: bool) -> bool:
        """True when every required package is there, after installing the missing ones if the user agrees
        (one dialog listing them all); an installed torch that is too old is reported, not replaced."""
        unmet = self.logic.unmetRequirements(withModels)
        if not unmet:
            return True
        problem = requirements.torchTooOld(unmet)
        if problem:
            slicer.util.errorDisplay(problem)
            return False
        names = "\n".join(f"  {requirement.describe()}" for requirement in unmet)
        if not slicer.util.confirmOkCancelDisplay(
                _("DoseSeg needs these Python packages:\n{names}\nInstall them now? (torch through the PyTorch "
                  "extension; the packages already installed are not changed)").format(names=names)):
            return False
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
            self.logic.installPackages(withModels, askConfirmation=False)
            return True
        return False

    def _options(self):
        """The command line's options for the patient, from the panel (prescriptions remembered on the study)."""
        return panelfields.stepOptions(self._parameterNode)


def _pydeps():
    """Slicer's package manager (``slicer.pydeps``, Slicer 5.11+), None on older Slicers."""
    try:
        import slicer.pydeps as pydeps
    except ImportError:
        return None
    return pydeps


class DoseSegLogic(ScriptedLoadableModuleLogic, DoseSegPipeline):
    """The console API: every step of the panel, on nodes of ``slicer.mrmlScene``.

    Long steps have a waiting form (``predictDose``) and a background form (``startPredictDose``,
    returning a job to poll); see DoseSegLogicLib.pipeline.
    """

    def __init__(self) -> None:
        if VERSION_PROBLEM:
            raise RuntimeError(VERSION_PROBLEM)
        ScriptedLoadableModuleLogic.__init__(self)
        DoseSegPipeline.__init__(self, slicer.mrmlScene)
        if hasattr(slicer.modules, "terminologies"):  # the auto-segmented OARs' codes, shown by the Segment Editor
            slicer.modules.terminologies.logic().LoadTerminologyFromFile(str(TERMINOLOGY_FILE))

    def showIsodose(self, doseNode, prescription=None) -> list:
        """Isodose lines at percentages of ``prescription`` (Gy; refused without one) through SlicerRT's Isodose
        module when installed, else DoseSeg's contour models."""
        if not prescription:
            raise ValueError("isodose levels are percentages of the prescription: give the prescription (Gy)")
        if not hasattr(slicer.modules, "isodose"):
            return DoseSegPipeline.showIsodose(self, doseNode, prescription)
        try:
            isodoseLogic = slicer.modules.isodose.logic()
            parameters = (slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLIsodoseNode")
                          or slicer.mrmlScene.AddNewNodeByClass("vtkMRMLIsodoseNode"))
            parameters.SetAndObserveDoseVolumeNode(doseNode)
            if parameters.GetColorTableNode() is None:
                parameters.SetAndObserveColorTableNode(isodoseLogic.GetDefaultIsodoseColorTable(slicer.mrmlScene))
            parameters.SetShowIsodoseLines(True)
            if hasattr(parameters, "SetReferenceDoseValue"):  # levels relative to the prescription, in dose units
                parameters.SetReferenceDoseValue(prescription / doseunits.gyPerUnit(doseNode))
                parameters.SetRelativeRepresentationFlag(True)
            isodoseLogic.CreateIsodoseSurfaces(parameters)
            return [parameters.GetIsosurfacesModelNode()]
        except (AttributeError, TypeError) as error:  # an Isodose module of another SlicerRT version
            logging.getLogger("DoseSeg").warning("SlicerRT Isodose failed (%s): DoseSeg's isodose lines instead", error)
            return DoseSegPipeline.showIsodose(self, doseNode, prescription)

    def getParameterNode(self):
        return DoseSegParameterNode(super().getParameterNode())

    @staticmethod
    def newRunFolder(ctNode) -> str:
        """A new folder for the outputs of one Run all (report.html, tables, volumes) under Slicer's scene folder."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return os.path.join(slicer.app.defaultScenePath, "DoseSeg", f"{fileName(ctNode.GetName())}-{stamp}")

    def showChart(self, chartNode) -> None:
        """Switch to a layout with a plot view showing ``chartNode``."""
        slicer.modules.plots.logic().ShowChartInLayout(chartNode)

    @staticmethod
    def unmetRequirements(withModels: bool = True) -> list:
        """The packages of Resources/requirements.txt missing or too old (the models' only when ``withModels``).

        Slicer 5.11+ reads the file with ``slicer.pydeps`` first: nothing is listed when it is satisfied.
        """
        pydeps = _pydeps()
        if withModels and pydeps is not None and pydeps.pip_check(
                pydeps.load_requirements(str(requirements.REQUIREMENTS_FILE))):
            return []
        return requirements.unmetRequirements(withModels)

    def installPackages(self, withModels: bool = True, askConfirmation: bool = True) -> None:
        """Install the missing or too old requirements, without changing any other installed package.

        torch comes from the PyTorch extension's installer (an installed torch that is too old is reported,
        not replaced); the others from pip, ready-made wheels only (never a build), constrained to the
        installed versions of every other package. pyradiomics comes from the SlicerRadiomics extension.
        """
        unmet = requirements.unmetRequirements(withModels)
        problem = requirements.torchTooOld(unmet)
        if problem:
            raise RuntimeError(problem)
        torch = next((requirement for requirement in unmet if requirement.name == "torch"), None)
        if torch is not None:
            try:
                import PyTorchUtils
            except ImportError:
                raise RuntimeError("PyTorch is missing: install the PyTorch extension (Extensions Manager)") from None
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation, None, f">={torch.minimum}") is None:
                raise RuntimeError("PyTorch was not installed")
        pip = [str(requirement) for requirement in unmet if requirement is not torch]
        if not pip:
            return
        offline = requirements.offlineProblem()
        if offline:
            raise RuntimeError(offline)
        constraints = os.path.join(slicer.app.temporaryPath, "DoseSeg-installed-constraints.txt")
        with open(constraints, "w") as handle:  # the installed versions of everything else stay
            handle.write(requirements.installedPins(exclude={requirement.name for requirement in unmet}))
        pydeps = _pydeps()
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):  # Slicer 5.11+
            from packaging.requirements import Requirement

            pydeps.pip_ensure([Requirement(text) for text in pip], constraints=constraints, requester="DoseSeg")
        else:
            slicer.util.pip_install(["--only-binary", ":all:", *pip, "-c", constraints])


if VERSION_PROBLEM is None:

    class DoseSegTest(selftest.DoseSegSelfTest):
        """The module's self-test (Slicer's Reload & Test and the ctest look for it here), on this Logic."""

        logicClass = DoseSegLogic
