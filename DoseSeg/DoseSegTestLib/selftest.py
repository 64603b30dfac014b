"""The DoseSeg module's self-test (Slicer's Reload & Test, and the extension's ctest): the scene scenario of the
pytest suite inside a real Slicer, on DoseSegLib's phantom."""

import os
import time

import slicer
from DoseSegLogicLib import nodes
from DoseSegLogicLib.dependencies import radiomicsProblem
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class DoseSegSelfTest(ScriptedLoadableModuleTest):
    """The scene scenario of the pytest suite, inside Slicer: a phantom patient, its DVH, metrics and steps.

    DoseSeg.py subclasses it as ``DoseSegTest`` with its Logic as ``logicClass`` (this file does not
    import DoseSeg.py: no import circle).
    """

    logicClass: type | None = None

    def _logic(self):
        """A new instance of the module's Logic."""
        return self.logicClass()

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        self._logic().installPackages(withModels=False, askConfirmation=False)

    def runTest(self) -> None:
        self.setUp()
        self.test_DoseSegScene()
        self.setUp()
        self.test_DoseSegSteps()
        self.setUp()
        self.test_DoseSegWhatIf()

    @staticmethod
    def _modelStepsSkipped() -> bool:
        return slicer.app.testingEnabled() and not os.environ.get("DOSESEG_TEST_MODELS")

    def _waitFor(self, condition, what: str, timeout: float = 300.0) -> None:
        """Let Slicer's event loop run (the panel's timer polls the worker) until ``condition()``."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertTrue(condition(), f"{what}: timed out")

    def _loadPhantom(self):
        from DoseSegLib.io.phantom import make_phantom

        case = make_phantom()
        ctNode = nodes.addVolumeNode(slicer.mrmlScene, case.ct, "phantom CT")
        doseNode = nodes.addVolumeNode(slicer.mrmlScene, case.dose, "phantom dose")
        segmentationNode = nodes.newSegmentationNode(slicer.mrmlScene, "phantom structures", ctNode)
        nodes.addSegments(segmentationNode, case.structures)
        return case, ctNode, doseNode, segmentationNode

    def test_DoseSegScene(self) -> None:
        """Geometry round trip, DVH tables against the library, metrics and goals, dose display."""
        import numpy as np

        from DoseSegLib.analysis.dvh import compute_dvhs

        self.delayDisplay("Scene: phantom nodes, DVH, metrics")
        case, ctNode, doseNode, segmentationNode = self._loadPhantom()
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(doseNode), case.dose.array.transpose(2, 1, 0)))
        self.assertTrue(nodes.volumeFromNode(doseNode).same_grid(case.ct))
        logic = self._logic()
        tables, chart = logic.computeDvh(doseNode, segmentationNode)
        self.assertEqual(len(tables), len(case.structures))
        self.assertEqual(chart.GetNumberOfPlotSeriesNodes(), len(case.structures))
        expected = compute_dvhs(case.dose, case.structures)["PTV70"]
        table = slicer.util.getFirstNodeByClassByName("vtkMRMLTableNode", "DVH PTV70")
        self.assertTrue(np.allclose(slicer.util.arrayFromTableColumn(table, "Volume"), expected.volume_pct))
        metrics, constraints = logic.computeMetrics(doseNode, segmentationNode)
        self.assertEqual(metrics.GetNumberOfRows(), len(case.structures))
        self.assertGreater(constraints.GetNumberOfRows(), 0)
        nodes.showDose(doseNode, ctNode, 70.0)
        logic.showChart(chart)
        self.assertEqual(doseNode.GetAttribute(nodes.DOSE_ATTRIBUTE), "1")
        self.assertEqual(doseNode.GetAttribute("DicomRtImport.DoseUnitName"), "GY")
        self.assertGreater(len(logic.showIsodose(doseNode, 70.0)), 0)
        self.delayDisplay("Scene test passed")

    def test_DoseSegSteps(self) -> None:
        """Align and radiomics through the background CLI; the model steps unless Slicer's testing mode is on."""
        _case, ctNode, doseNode, segmentationNode = self._loadPhantom()
        logic = self._logic()
        self.delayDisplay("Align structures (background process)")
        aligned = logic.alignStructures(ctNode, segmentationNode)
        self.assertEqual(aligned.GetSegmentation().GetNumberOfSegments(),
                         segmentationNode.GetSegmentation().GetNumberOfSegments())
        if radiomicsProblem() is None:
            self.assertGreater(logic.extractRadiomics(ctNode, aligned).GetNumberOfRows(), 0)
        if self._modelStepsSkipped():
            self.delayDisplay("Testing mode: model steps skipped (set DOSESEG_TEST_MODELS=1 to run them)")
            return
        self.delayDisplay("Model steps: auto-segment, predict dose, run all")
        logic.installPackages(withModels=True, askConfirmation=False)
        self.assertIsNotNone(logic.segmentMissingOars(ctNode, aligned))
        predicted = logic.predictDose(ctNode, aligned)
        self.assertEqual(predicted.GetAttribute(nodes.DOSE_ATTRIBUTE), "1")
        outputs = logic.runAll(ctNode, aligned, doseNode)
        self.assertGreater(outputs["metrics"].GetNumberOfRows(), 0)
        self.delayDisplay("Steps test passed")

    def test_DoseSegWhatIf(self) -> None:
        """The What-if section of the real panel: Start, an edit, a sensitivity map with its legend, Stop, and the
        worker ended by a scene close."""
        if self._modelStepsSkipped():
            self.delayDisplay("Testing mode: what-if skipped (set DOSESEG_TEST_MODELS=1 to run it)")
            return
        import numpy as np
        from scipy import ndimage

        case, ctNode, _doseNode, segmentationNode = self._loadPhantom()
        self._logic().installPackages(withModels=True, askConfirmation=False)
        slicer.util.selectModule("DoseSeg")
        widget = slicer.util.getModuleWidget("DoseSeg")
        parameters = widget.logic.getParameterNode()
        parameters.ctVolume, parameters.segmentation = ctNode, segmentationNode
        self.delayDisplay("What-if: Start")
        widget.ui.whatIfStartButton.click()
        whatIf = widget.whatIf.whatIf
        self.assertIsNotNone(whatIf)
        self._waitFor(lambda: whatIf.updates == 1, "first what-if prediction")
        before = nodes.volumeFromNode(whatIf.doseNode).array.copy()
        grown = case.ct.with_array(ndimage.binary_dilation(case.structures["PTV70"].array, iterations=2))
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            grown.array.transpose(2, 1, 0).astype(np.uint8), segmentationNode,
            segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("PTV70"), ctNode)
        self._waitFor(lambda: whatIf.updates == 2, "what-if prediction after an edit")
        self.assertFalse(np.allclose(before, nodes.volumeFromNode(whatIf.doseNode).array, atol=0.05))
        self.assertIsNotNone(slicer.mrmlScene.GetFirstNodeByName("DVH previous PTV70"))
        self.delayDisplay("What-if: sensitivity of the left parotid's mean dose to the PTV70 contour")
        for combo, name in ((widget.ui.sensitivityStructureComboBox, "LeftParotid"),
                            (widget.ui.sensitivityWrtComboBox, "PTV70")):
            combo.setCurrentIndex(combo.findText(name))
        widget.ui.sensitivityButton.click()
        self._waitFor(lambda: whatIf.sensitivityNode is not None, "sensitivity map")
        legend = slicer.modules.colors.logic().GetColorLegendDisplayNode(whatIf.sensitivityNode)
        self.assertIsNotNone(legend)
        self.assertIn("Gy per cc", legend.GetTitleText())
        widget.ui.whatIfStartButton.click()  # Stop
        self.assertIsNone(widget.whatIf.whatIf)
        self.assertIsNotNone(whatIf.worker.process.poll())
        widget.ui.whatIfStartButton.click()
        second = widget.whatIf.whatIf
        slicer.mrmlScene.Clear()
        self.assertIsNone(widget.whatIf.whatIf)
        self.assertIsNotNone(second.worker.process.poll())
        self.delayDisplay("What-if test passed")
