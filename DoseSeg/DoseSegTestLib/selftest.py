"""The DoseSeg module's self-test (Slicer's Reload & Test, and the extension's ctest): the scene scenario of the
pytest suite inside a real Slicer, on DoseSegLib's phantom."""

import os

import slicer
from DoseSegLogicLib import nodes
from DoseSegLogicLib.dependencies import radiomicsProblem
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


def _logic():
    """The module's Logic (imported here: DoseSeg.py imports this file)."""
    from DoseSeg import DoseSegLogic

    return DoseSegLogic()


class DoseSegTest(ScriptedLoadableModuleTest):
    """The scene scenario of the pytest suite, inside Slicer: a phantom patient, its DVH, metrics and steps."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        _logic().installPackages(withModels=False, askConfirmation=False)

    def runTest(self) -> None:
        self.setUp()
        self.test_DoseSegScene()
        self.setUp()
        self.test_DoseSegSteps()

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
        logic = _logic()
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
        logic = _logic()
        self.delayDisplay("Align structures (background process)")
        aligned = logic.alignStructures(ctNode, segmentationNode)
        self.assertEqual(aligned.GetSegmentation().GetNumberOfSegments(),
                         segmentationNode.GetSegmentation().GetNumberOfSegments())
        if radiomicsProblem() is None:
            self.assertGreater(logic.extractRadiomics(ctNode, aligned).GetNumberOfRows(), 0)
        if slicer.app.testingEnabled() and not os.environ.get("DOSESEG_TEST_MODELS"):
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
