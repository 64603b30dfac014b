"""The DoseSeg steps on an MRML scene: the module Logic's console API, without Qt.

Long steps (align, auto-segment, predict dose, radiomics, run all) write a
patient folder (ct.nrrd, structures/<Name>.nrrd, dose.nrrd) in a temporary
folder, run the DoseSegLib command line there in a background process and load
its output into the scene. ``start<Step>`` returns the running :class:`DoseSegJob`
(the GUI polls it from a timer); ``<step>`` waits for it. The DVH button runs in-process;
Run all loads the tables ``doseseg run`` wrote (see :mod:`runfolder`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from DoseSegLib import Case, Volume
from DoseSegLib.analysis.constraints import RESULT_COLUMNS, load_constraints
from DoseSegLib.analysis.dvh import compute_dvhs
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.io.patient import read_dose, read_mask, read_segmentation, write_patient

from . import dependencies, hierarchy, isodose, nodes, results, runfolder, terminology
from .jobs import DoseSegJob, DoseSegJobError  # noqa: F401 (DoseSegJobError: part of this API)
from .runfolder import CONSTRAINTS_TABLE_NAME, METRICS_TABLE_NAME, RADIOMICS_TABLE_NAME

AUTO_SEGMENTED_TAG = "DoseSeg.AutoSegmented"
RADIOMICS_CSV = "radiomics*.csv"
DOSE_FILE = "dose.nrrd"
SEGMENTATION_FILE = "*.seg.nrrd"

log = logging.getLogger(__name__)


def _findOutput(folder: Path, pattern: str, required: bool = True) -> Path | None:
    """The first file under ``folder`` matching ``pattern``; None (or an error when ``required``) if none."""
    found = sorted(folder.rglob(pattern))
    if not found and required:
        raise DoseSegError(f"the command wrote no {pattern}")
    return found[0] if found else None


def _options(command: list, device: str, mirrorAveraging: bool) -> list:
    """``command`` with the device and, when asked, mirror averaging (``--tta``)."""
    return [*command, "--device", device, *(["--tta"] if mirrorAveraging else [])]


def fileName(name: str) -> str:
    """A structure name usable as a file name on every system."""
    return re.sub(r'[\\/:*?"<>|]', "_", name).strip() or "structure"


class DoseSegPipeline:
    """The DoseSeg steps on ``scene``; node arguments are MRML nodes of that scene."""

    def __init__(self, scene) -> None:
        self.scene = scene

    # -- long steps, in a background process --------------------------------------------------------------------

    def _job(self, title, ctNode, segmentationNode, command, finish, doseNode=None, onCtGrid=True,
             output=None) -> DoseSegJob:
        """A started job over a patient folder holding the CT, the segments (on the CT grid or their own) and a dose.

        ``output`` is the command's output folder (kept); a temporary one when None.
        """
        ct = nodes.volumeFromNode(ctNode)
        masks = {}
        if segmentationNode is not None:
            masks = nodes.segmentMasks(segmentationNode, ct if onCtGrid else None)
        dose = nodes.volumeFromNode(doseNode) if doseNode is not None else None
        names = {fileName(name) for name in masks}
        if len(names) != len(masks):
            raise DoseSegError("two segment names give the same file name: rename one of them")

        def writeInputs(folder: Path) -> list:
            patient = folder / "patient"
            patient.mkdir()
            structures = {fileName(name): mask for name, mask in masks.items()}
            write_patient(patient, Case("patient", ct, structures, dose))
            return [*command[:1], patient, *command[1:]]

        return DoseSegJob(title, writeInputs, finish, output).start()

    def startAlignStructures(self, ctNode, segmentationNode) -> DoseSegJob:
        """Resample every segment onto the CT grid (``doseseg align``) into a new segmentation node."""
        colors = {NameMapper().canonical(name): color for name, color in nodes.segmentColors(segmentationNode).items()}

        def finish(output: Path):
            aligned = nodes.newSegmentationNode(self.scene, f"{segmentationNode.GetName()} on CT grid", ctNode)
            files = sorted(_findOutput(output, "ct.nrrd").parent.glob("structures/*.nrrd"))
            nodes.addSegments(aligned, {file.name[: -len(".nrrd")]: read_mask(file) for file in files}, colors)
            return aligned

        return self._job("Align structures", ctNode, segmentationNode, ["align"], finish, onCtGrid=False)

    def startSegmentMissingOars(self, ctNode, segmentationNode=None, device: str = "auto",
                                mirrorAveraging: bool = False) -> DoseSegJob:
        """Auto-segment the CT (``doseseg segment``); the OARs it lacks are added to ``segmentationNode``.

        A new segmentation node is made when ``segmentationNode`` is None. The job's result is the
        segmentation node; the added segments carry the tag ``DoseSeg.AutoSegmented``.

        Args:
            device: "auto", "cpu" or "cuda".
            mirrorAveraging: also predict the left-right mirrored patient and average (``--tta``).
        """
        return self._job("Auto-segment", ctNode, segmentationNode, _options(["segment"], device, mirrorAveraging),
                         lambda output: self.addMissingSegments(_findOutput(output, SEGMENTATION_FILE), ctNode,
                                                                segmentationNode))

    def addMissingSegments(self, path: str | Path, ctNode, segmentationNode=None):
        """Add the structures of a .seg.nrrd that ``segmentationNode`` lacks (by canonical name), tagged auto-segmented
        and with their standard terminology (see :mod:`terminology`).

        Args:
            path: the .seg.nrrd (e.g. written by ``doseseg segment``).
            ctNode: reference geometry of a new segmentation node.
            segmentationNode: where to add them; a new node when None.

        Returns:
            The segmentation node.
        """
        masks = read_segmentation(path)
        if segmentationNode is None:
            segmentationNode = nodes.newSegmentationNode(self.scene, f"{ctNode.GetName()} segmentation", ctNode)
            hierarchy.placeBesideCt(ctNode, segmentationNode)
        present = {NameMapper().canonical(name) for name in nodes.segmentColors(segmentationNode)}
        missing = {name: mask for name, mask in masks.items() if name not in present}
        segmentation = segmentationNode.GetSegmentation()
        for name, segmentId in zip(missing, nodes.addSegments(segmentationNode, missing), strict=True):
            segment = segmentation.GetSegment(segmentId)
            segment.SetTag(AUTO_SEGMENTED_TAG, "1")
            terminology.setTerminology(segment, name)
        log.info("auto-segmented: %s", ", ".join(missing) or "nothing missing")
        return segmentationNode

    def startPredictDose(self, ctNode, segmentationNode, device: str = "auto", prescription: float | None = None,
                         doseNode=None, mirrorAveraging: bool = False) -> DoseSegJob:
        """Predict the dose (``doseseg predict-dose``) into ``doseNode`` (new when None), shown over the CT.

        Args:
            device: "auto", "cpu" or "cuda".
            prescription: Gy, top of the colour window (at least the maximum dose).
            mirrorAveraging: also predict the left-right mirrored patient and average (``--tta``).
        """
        return self._job("Predict dose", ctNode, segmentationNode, _options(["predict-dose"], device, mirrorAveraging),
                         lambda output: self.loadDose(_findOutput(output, DOSE_FILE), ctNode, prescription, doseNode))

    def loadDose(self, path: str | Path, ctNode, prescription: float | None = None, doseNode=None):
        """Load a dose NRRD (Gy) as an RT dose volume (SlicerRT's attributes, unit Gy) under the CT's study,
        shown over the CT.

        Args:
            path: the dose file (e.g. written by ``doseseg predict-dose``).
            ctNode: the CT it is shown over.
            prescription: Gy, top of the colour window (at least the maximum dose).
            doseNode: the volume node to fill; a new "<CT> predicted dose" node when None.
        """
        dose = read_dose(path)
        if doseNode is None:
            doseNode = nodes.addVolumeNode(self.scene, dose, f"{ctNode.GetName()} predicted dose")
        else:
            nodes.updateVolumeNode(doseNode, dose)
        nodes.showDose(doseNode, ctNode, prescription)
        hierarchy.placeBesideCt(ctNode, doseNode)
        return doseNode

    def startExtractRadiomics(self, ctNode, segmentationNode) -> DoseSegJob:
        """pyradiomics features of every segment on the CT (``doseseg radiomics``) into a table node.

        Raises DoseSegError at once when pyradiomics is not importable (see :mod:`dependencies`).
        """
        problem = dependencies.radiomicsProblem()
        if problem:
            raise DoseSegError(problem)
        return self._job("Extract radiomics", ctNode, segmentationNode, ["radiomics"],
                         lambda output: results.loadCsvTable(
                             self.scene, _findOutput(output, RADIOMICS_CSV), RADIOMICS_TABLE_NAME))

    def startRunAll(self, ctNode, segmentationNode, referenceDoseNode=None, prescription: float | None = None,
                    device: str = "auto", mirrorAveraging: bool = False, doseNode=None,
                    outputFolder: str | Path | None = None, radiomics: bool | None = None) -> DoseSegJob:
        """The whole chain (``doseseg run``), its outputs loaded as the command wrote them.

        The job's result is a dict of the output nodes: dose, segmentation, dvhTables, dvhChart, metrics,
        constraints, radiomics and comparison (None when the command wrote no such table), and folder
        (``outputFolder``, or None when the outputs were temporary). The DVH, metric and goal tables are
        the command's CSV files, so they agree with its report.

        Args:
            referenceDoseNode: goes into the patient folder as its dose.nrrd, which the command compares with.
            prescription: Gy, top of the dose colour window only (the command reads the prescriptions
                from the PTV names).
            mirrorAveraging: passes ``--tta``.
            doseNode: the volume node the predicted dose goes into (a new one when None).
            outputFolder: a new or empty folder keeping every output (report.html included).
            radiomics: extract the radiomics features; when None, only if pyradiomics is importable
                (``--no-radiomics`` otherwise).
        """
        if radiomics is None:
            radiomics = dependencies.radiomicsProblem() is None
        command = _options(["run"], device, mirrorAveraging) + ([] if radiomics else ["--no-radiomics"])

        def finish(output: Path) -> dict:
            return self.loadRunFolder(output, ctNode, segmentationNode, prescription, doseNode) | {
                "folder": Path(outputFolder) if outputFolder is not None else None}

        return self._job("Run all", ctNode, segmentationNode, command, finish, doseNode=referenceDoseNode,
                         output=outputFolder)

    def loadRunFolder(self, folder: str | Path, ctNode, segmentationNode=None, prescription: float | None = None,
                      doseNode=None) -> dict:
        """Load a ``doseseg run`` output folder of one patient: dose, missing OARs and the command's tables.

        Args:
            folder: the folder holding summary.json, dose.nrrd, segmentation.seg.nrrd, dvh.csv, ...
            ctNode: the CT the dose is shown over (reference geometry of a new segmentation).
            segmentationNode: receives the structures it lacks; a new node when None.
            prescription: Gy, top of the dose colour window.
            doseNode: the volume node to fill; a new one when None.

        Returns:
            dict of nodes: dose, segmentation, doseDifference (predicted minus reference, None without a
            reference dose) and those of :func:`runfolder.loadRunTables`; the tables and the chart go in
            the "DoseSeg results" folder under the CT's study.
        """
        folder = runfolder.checkRunFolder(Path(folder))
        segmentation = self.addMissingSegments(folder / "segmentation.seg.nrrd", ctNode, segmentationNode)
        dose = self.loadDose(folder / DOSE_FILE, ctNode, prescription, doseNode)
        difference = runfolder.loadDoseDifference(self.scene, folder, ctNode)
        tables = runfolder.loadRunTables(self.scene, folder, segmentation)
        hierarchy.placeInFolder(ctNode, hierarchy.RESULTS_FOLDER, difference, tables["dvhChart"],
                                *tables["dvhTables"], *(tables[key] for key in runfolder.TABLE_KEYS))
        return {"dose": dose, "segmentation": segmentation, "doseDifference": difference, **tables}

    def showIsodose(self, doseNode, prescription: float | None = None) -> list:
        """Isodose lines of ``doseNode`` as contour models (see :mod:`isodose`) in a folder beside the dose."""
        models = isodose.isodoseModels(doseNode, prescription)
        hierarchy.placeInFolder(doseNode, hierarchy.ISODOSE_FOLDER, *models)
        return models

    def alignStructures(self, ctNode, segmentationNode):
        """:meth:`startAlignStructures`, waiting for the result."""
        return self.startAlignStructures(ctNode, segmentationNode).wait()

    def segmentMissingOars(self, ctNode, segmentationNode=None, device: str = "auto", mirrorAveraging: bool = False):
        """:meth:`startSegmentMissingOars`, waiting for the result."""
        return self.startSegmentMissingOars(ctNode, segmentationNode, device, mirrorAveraging).wait()

    def predictDose(self, ctNode, segmentationNode, device: str = "auto", prescription: float | None = None,
                    doseNode=None, mirrorAveraging: bool = False):
        """:meth:`startPredictDose`, waiting for the result."""
        return self.startPredictDose(ctNode, segmentationNode, device, prescription, doseNode, mirrorAveraging).wait()

    def extractRadiomics(self, ctNode, segmentationNode):
        """:meth:`startExtractRadiomics`, waiting for the result."""
        return self.startExtractRadiomics(ctNode, segmentationNode).wait()

    def runAll(self, ctNode, segmentationNode, referenceDoseNode=None, prescription: float | None = None,
               device: str = "auto", mirrorAveraging: bool = False, doseNode=None,
               outputFolder: str | Path | None = None) -> dict:
        """:meth:`startRunAll`, waiting for the result."""
        return self.startRunAll(ctNode, segmentationNode, referenceDoseNode, prescription, device,
                                mirrorAveraging, doseNode, outputFolder).wait()

    # -- fast steps, in-process --------------------------------------------------------------------------------

    def computeDvh(self, doseNode, segmentationNode, referenceDoseNode=None, stepGy: float = 0.1):
        """Cumulative DVH of every segment: one table node per structure and one plot chart.

        Curves take their segment's colour; those of ``referenceDoseNode`` are dashed.

        Returns:
            (tableNodes, chartNode)
        """
        chartNode = results.dvhChart(self.scene)
        tableNodes = []
        for node, label in ((doseNode, ""), (referenceDoseNode, "reference ")):
            if node is not None:
                dose, masks, colors = self._doseAndMasks(node, segmentationNode)
                dvhs = compute_dvhs(dose, masks, stepGy)
                tableNodes += results.addDvhNodes(chartNode, dvhs, colors, label, dashed=bool(label))
        return tableNodes, chartNode

    def computeMetrics(self, doseNode, segmentationNode, prescription: float | None = None,
                       constraintsFile: str | Path | None = None):
        """DVH metrics (TG-263: Mean[Gy], D95%[Gy], D0.1cc[Gy], ..., HI, CI of targets) and goal checks of every
        segment.

        Args:
            prescription: Gy; the highest ``PTV<dose>`` level when None.
            constraintsFile: CSV of clinical goals; DoseSegLib's head-and-neck table when None.

        Returns:
            (metricsTableNode, constraintsTableNode)
        """
        dose, masks, _ = self._doseAndMasks(doseNode, segmentationNode)
        # the dose grid stands in for the CT grid: the structures are on it
        case = Case(doseNode.GetName(), dose, masks, dose, prescription=prescription)
        evaluation = evaluate_plan(case, constraints=load_constraints(constraintsFile))
        metricsTable = results.getOrAddNode(self.scene, "vtkMRMLTableNode", METRICS_TABLE_NAME)
        results.setTableRows(metricsTable, evaluation.metrics)
        constraintsTable = results.getOrAddNode(self.scene, "vtkMRMLTableNode", CONSTRAINTS_TABLE_NAME)
        results.setTableRows(constraintsTable, evaluation.constraints, RESULT_COLUMNS)
        return metricsTable, constraintsTable

    def setDoseOpacity(self, opacity: float, doseNode=None) -> None:
        """Opacity of ``doseNode`` (any RT dose when None) in the slice views showing it over the CT."""
        nodes.setDoseOpacity(self.scene, opacity, doseNode)

    @staticmethod
    def _doseAndMasks(doseNode, segmentationNode) -> tuple[Volume, dict[str, Volume], dict[str, tuple]]:
        """The dose, the segments on its grid and their colours, keyed by canonical structure name."""
        dose = nodes.volumeFromNode(doseNode)
        mapper = NameMapper()
        masks = {}
        for name, mask in nodes.segmentMasks(segmentationNode, dose).items():
            canonical = mapper.canonical(name)
            if canonical in masks:
                raise DoseSegError(f"two segments of '{segmentationNode.GetName()}' are both '{canonical}'")
            masks[canonical] = mask
        if not masks:
            raise DoseSegError(f"no segment of '{segmentationNode.GetName()}' overlaps '{doseNode.GetName()}'")
        colors = {mapper.canonical(name): color for name, color in nodes.segmentColors(segmentationNode).items()}
        return dose, masks, colors
