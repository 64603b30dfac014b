"""The DoseSeg module's self-test (Slicer's Reload & Test, and the extension's ctest): a plan loaded as SlicerRT's
DICOM-RT import leaves it (DoseSegTestLib.rtscene), through Compute DVH, the dose units, isodose lines and Run all.

It never installs a package without asking: missing packages end the test with a message. In Slicer's
testing mode Run all uses tiny random models (DoseSegTestLib.tinymodels); otherwise the bundled ones.
"""

import os
import tempfile
import time
from pathlib import Path

import slicer
from DoseSegLogicLib import doseunits, hierarchy, nodes
from DoseSegLogicLib.dependencies import radiomicsProblem
from DoseSegTestLib.rtscene import TARGET_GY, TARGET_NAME, buildRtStudy
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class DoseSegSelfTest(ScriptedLoadableModuleTest):
    """A SlicerRT-like plan through every step, inside Slicer.

    DoseSeg.py subclasses it as ``DoseSegTest`` with its Logic as ``logicClass`` (this file does not
    import DoseSeg.py: no import circle).
    """

    logicClass: type | None = None

    def _logic(self):
        """A new instance of the module's Logic."""
        return self.logicClass()

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_DoseSegScene()
        self.setUp()
        self.test_DoseSegSteps()
        self.setUp()
        self.test_DoseSegWhatIf()

    def _packagesMissing(self, withModels: bool) -> bool:
        """True (with a message) when packages are missing: the self-test never installs without asking."""
        unmet = self._logic().unmetRequirements(withModels)
        if unmet:
            names = ", ".join(requirement.describe() for requirement in unmet)
            self.delayDisplay(f"Skipped: missing Python packages ({names}); install them from the DoseSeg panel")
        return bool(unmet)

    @staticmethod
    def _testingMode() -> bool:
        return slicer.app.testingEnabled() and not os.environ.get("DOSESEG_TEST_MODELS")

    def _waitFor(self, condition, what: str, timeout: float = 300.0) -> None:
        """Let Slicer's event loop run (the panel's timer polls the worker) until ``condition()``."""
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertTrue(condition(), f"{what}: timed out")

    def test_DoseSegScene(self) -> None:
        """Compute DVH on the SlicerRT-like plan: the library's numbers, Gy from a CGY study, SlicerRT's DVH tables,
        isodose lines relative to the prescription."""
        if self._packagesMissing(withModels=False):
            return
        self.delayDisplay("Scene: a SlicerRT-like plan, Compute DVH, isodose lines")
        rt = buildRtStudy(slicer.mrmlScene)
        logic = self._logic()
        outputs = logic.computeDvh(rt.dose, rt.segmentation, {TARGET_NAME: TARGET_GY})
        rows = {outputs["metrics"].GetCellText(r, 0): r for r in range(outputs["metrics"].GetNumberOfRows())}
        self.assertIn(TARGET_NAME, rows)
        column = outputs["metrics"].GetTable().GetColumnByName("Mean[Gy]")
        self.assertLess(abs(column.GetValue(rows[TARGET_NAME]) - TARGET_GY), 10.0, "a CGY study read in Gy")
        self.assertEqual(len(outputs["dvhTables"]), len(rows))
        self.assertTrue(all(t.GetAttribute("DoseVolumeHistogram.DVH") == "1" for t in outputs["dvhTables"]))
        self.assertEqual(doseunits.doseUnit(rt.dose), "CGY")
        self.assertGreater(len(logic.showIsodose(rt.dose, TARGET_GY)), 0)
        logic.showChart(outputs["dvhChart"])
        self.delayDisplay("Scene test passed")

    def test_DoseSegSteps(self) -> None:
        """Align, radiomics and Run all through the background command line (tiny models in testing mode)."""
        if self._packagesMissing(withModels=True):
            return
        rt = buildRtStudy(slicer.mrmlScene)
        logic = self._logic()
        self.delayDisplay("Align structures (background process)")
        aligned = logic.alignStructures(rt.ct, rt.segmentation)
        self.assertEqual(aligned.GetSegmentation().GetNumberOfSegments(),
                         rt.segmentation.GetSegmentation().GetNumberOfSegments())
        if radiomicsProblem() is None:
            self.assertGreater(logic.extractRadiomics(rt.ct, rt.segmentation).GetNumberOfRows(), 0)
        previous = os.environ.get("DOSESEG_MODELS")
        with tempfile.TemporaryDirectory() as folder:
            if self._testingMode():
                from DoseSegTestLib.tinymodels import writeTinyCatalogue

                os.environ["DOSESEG_MODELS"] = str(writeTinyCatalogue(Path(folder)))
            try:
                self.delayDisplay("Run all on the plan (PTV1 needs its prescription)")
                outputs = logic.runAll(rt.ct, rt.segmentation, rt.dose, {TARGET_NAME: TARGET_GY})
            finally:
                if previous is None:
                    os.environ.pop("DOSESEG_MODELS", None)
                else:
                    os.environ["DOSESEG_MODELS"] = previous
        self.assertEqual(hierarchy.studyAncestorItem(outputs["dose"]), rt.study)
        self.assertEqual(outputs["dose"].GetAttribute(nodes.DOSE_ATTRIBUTE), "1")
        self.assertGreater(outputs["metrics"].GetNumberOfRows(), 0)
        self.assertGreater(len(outputs["dvhTables"]), 0)
        self.assertIsNotNone(outputs["constraints"])
        self.delayDisplay("Steps test passed")

    def test_DoseSegWhatIf(self) -> None:
        """The What-if section of the real panel: Start, an edit, a sensitivity map with its legend, Stop, and the
        worker ended by a scene close (bundled models: not in testing mode)."""
        if self._testingMode():
            self.delayDisplay("Testing mode: what-if skipped (set DOSESEG_TEST_MODELS=1 to run it)")
            return
        if self._packagesMissing(withModels=True):
            return
        import numpy as np
        from scipy import ndimage

        from DoseSegLib.io.phantom import make_phantom

        case = make_phantom()
        ctNode = nodes.addVolumeNode(slicer.mrmlScene, case.ct, "phantom CT")
        segmentationNode = nodes.newSegmentationNode(slicer.mrmlScene, "phantom structures", ctNode)
        nodes.addSegments(segmentationNode, case.structures)
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
