"""The DoseSeg steps on an MRML scene: the module Logic's console API, without Qt.

Long steps (align, auto-segment, predict dose, radiomics, run all) write a
patient folder (ct.nrrd, structures/<Name>.nrrd each on the segment's own grid,
dose.nrrd) in a temporary folder, run the DoseSegLib command line there in a
background process and load its output into the scene. ``start<Step>`` returns the
running :class:`DoseSegJob` (the GUI polls it from a timer); ``<step>`` waits for it.
Compute DVH runs in-process through the library's own path (see :mod:`evaluation`);
Run all loads the tables ``doseseg run`` wrote (see :mod:`runfolder`). Every step
takes a :class:`PatientOptions`: the command line's options for a patient.

The blocking console API, stable by name::

    pipeline = DoseSegPipeline(slicer.mrmlScene)
    out = pipeline.computeDvh(doseNode, segmentationNode, prescriptions={"PTV1": 60})
    out["metrics"], out["dvhTables"]          # table nodes
    out = pipeline.runAll(ctNode, segmentationNode, referenceDose=None, prescriptions={"PTV1": 60})
    out["dose"], out["metrics"], out["dvhTables"], out["constraints"]
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from DoseSegLib import Case
from DoseSegLib.analysis.constraints import RESULT_COLUMNS
from DoseSegLib.analysis.dvh import metrics_columns
from DoseSegLib.core.alignment import outside_fraction
from DoseSegLib.core.case import primary_prescription
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.colors import structure_color
from DoseSegLib.core.names import NameMapper
from DoseSegLib.io.patient import read_dose, read_mask, read_segmentation, write_patient
from DoseSegLib.io.tables import read_csv

from . import dependencies, doseunits, evaluation, hierarchy, isodose, nodes, results, runfolder, terminology
from .jobs import DoseSegJob, DoseSegJobError  # noqa: F401 (DoseSegJobError: part of this API)
from .options import PatientOptions
from .runfolder import CONSTRAINTS_TABLE_NAME, METRICS_TABLE_NAME, RADIOMICS_TABLE_NAME

AUTO_SEGMENTED_TAG = "DoseSeg.AutoSegmented"
RADIOMICS_CSV = "radiomics*.csv"
DOSE_FILE = "dose.nrrd"
IN_PROCESS_VOXELS = 8_000_000  # Compute DVH on a larger grid (a clinical CT) runs in a background process
REFERENCE_LABEL = "reference "
SEGMENTATION_FILE = "*.seg.nrrd"

log = logging.getLogger(__name__)


def _findOutput(folder: Path, pattern: str, required: bool = True) -> Path | None:
    """The first file under ``folder`` matching ``pattern``; None (or an error when ``required``) if none."""
    found = sorted(folder.rglob(pattern))
    if not found and required:
        raise DoseSegError(f"the command wrote no {pattern}")
    return found[0] if found else None


def patientOptions(options: PatientOptions | None = None, prescriptions: Mapping[str, float] | None = None
                   ) -> PatientOptions:
    """``options`` (defaults when None) with ``prescriptions`` (target -> Gy) added over its own."""
    options = options or PatientOptions()
    if prescriptions:
        options = replace(options, prescriptions={**options.prescriptions, **prescriptions})
    return options


def fileName(name: str) -> str:
    """A structure name usable as a file name on every system."""
    return re.sub(r'[\\/:*?"<>|]', "_", name).strip() or "structure"


class DoseSegPipeline:
    """The DoseSeg steps on ``scene``; node arguments are MRML nodes of that scene."""

    def __init__(self, scene) -> None:
        self.scene = scene

    # -- long steps, in a background process --------------------------------------------------------------------

    def _job(self, title: str, ctNode, segmentationNode, command: list, finish, doseNode=None,
             output=None, read=None) -> DoseSegJob:
        """A started job over a patient folder: the CT, each segment on its own grid (the command aligns them
        onto the CT by physical coordinates) and a dose in Gy.

        Segments that miss the CT entirely are left out with a warning. ``output`` is the command's output
        folder (kept); a temporary one when None. ``read`` reads the outputs in a worker thread (see
        :class:`DoseSegJob`).
        """
        ct = nodes.volumeFromNode(ctNode)
        masks = {}
        if segmentationNode is not None:
            for name, mask in nodes.segmentMasks(segmentationNode).items():
                if outside_fraction(mask, ct) >= 1.0:
                    log.warning("segment '%s' lies outside the CT '%s' and was left out", name, ctNode.GetName())
                else:
                    masks[name] = mask
        dose = doseunits.doseVolume(doseNode) if doseNode is not None else None
        names = {fileName(name) for name in masks}
        if len(names) != len(masks):
            raise DoseSegError("two segment names give the same file name: rename one of them")

        def writeInputs(folder: Path) -> list:
            patient = folder / "patient"
            patient.mkdir()
            structures = {fileName(name): mask for name, mask in masks.items()}
            write_patient(patient, Case("patient", ct, structures, dose))
            return [*command[:1], patient, *command[1:]]

        return DoseSegJob(title, writeInputs, finish, output, read).start()

    def startAlignStructures(self, ctNode, segmentationNode, options: PatientOptions | None = None) -> DoseSegJob:
        """Resample every segment onto the CT grid (``doseseg align``) into a new segmentation node."""
        options = options or PatientOptions()
        mapper = options.mapper()
        colors = {mapper.canonical(name): color for name, color in nodes.segmentColors(segmentationNode).items()}

        def finish(output: Path):
            aligned = nodes.newSegmentationNode(self.scene, f"{segmentationNode.GetName()} on CT grid", ctNode)
            files = sorted(_findOutput(output, "ct.nrrd").parent.glob("structures/*.nrrd"))
            nodes.addSegments(aligned, {file.name[: -len(".nrrd")]: read_mask(file) for file in files}, colors)
            hierarchy.placeBesideCt(ctNode, aligned)
            return aligned

        return self._job("Align structures", ctNode, segmentationNode, ["align", *options.arguments("align")],
                         finish)

    def startSegmentMissingOars(self, ctNode, segmentationNode=None, options: PatientOptions | None = None
                                ) -> DoseSegJob:
        """Auto-segment the CT (``doseseg segment``); the OARs it lacks are added to ``segmentationNode``.

        A new segmentation node is made when ``segmentationNode`` is None. The job's result is the
        segmentation node; the added segments carry the tag ``DoseSeg.AutoSegmented``.
        """
        options = options or PatientOptions()
        return self._job("Auto-segment", ctNode, segmentationNode, ["segment", *options.arguments("segment")],
                         lambda masks: self.addMissingMasks(masks, ctNode, segmentationNode),
                         read=lambda output: read_segmentation(_findOutput(output, SEGMENTATION_FILE)))

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
        return self.addMissingMasks(read_segmentation(path), ctNode, segmentationNode)

    def addMissingMasks(self, masks: Mapping, ctNode, segmentationNode=None):
        """:meth:`addMissingSegments` of masks already read (by structure name)."""
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

    def startPredictDose(self, ctNode, segmentationNode, options: PatientOptions | None = None,
                         doseNode=None) -> DoseSegJob:
        """Predict the dose (``doseseg predict-dose``) into ``doseNode`` (new when None), shown over the CT."""
        options = options or PatientOptions()
        return self._job("Predict dose", ctNode, segmentationNode,
                         ["predict-dose", *options.arguments("predict-dose")],
                         lambda dose: self.showDoseVolume(dose, ctNode, mainPrescription(options), doseNode),
                         read=lambda output: read_dose(_findOutput(output, DOSE_FILE)))

    def loadDose(self, path: str | Path, ctNode, prescription: float | None = None, doseNode=None):
        """Load a dose NRRD (Gy) as an RT dose volume under the CT's study, shown over the CT.

        The voxels are in the study's dose unit (SlicerRT's ``DoseUnitName`` on the study item: GY,
        written there when the study has none; a study in CGY gets cGy), see :mod:`doseunits`.

        Args:
            path: the dose file (e.g. written by ``doseseg predict-dose``).
            ctNode: the CT it is shown over.
            prescription: Gy, top of the colour window (at least the maximum dose).
            doseNode: the volume node to fill; a new "<CT> predicted dose" node when None.
        """
        return self.showDoseVolume(read_dose(path), ctNode, prescription, doseNode)

    def showDoseVolume(self, dose, ctNode, prescription: float | None = None, doseNode=None):
        """:meth:`loadDose` of a dose already read (a Volume in Gy; a float one is converted in place when the
        CT's study is in cGy)."""
        factor = doseunits.GY_PER_UNIT[doseunits.studyDoseUnit(ctNode)]
        if factor != 1.0:  # the study's unit (cGy): one pass, in place when the dose is ours to change
            array = dose.array if dose.array.dtype.kind == "f" else dose.array.astype(np.float32)
            dose = dose.with_array(np.divide(array, factor, out=array))
        doseNode = nodes.addOrUpdateVolumeNode(self.scene, doseNode, dose, f"{ctNode.GetName()} predicted dose",
                                               autoWindowLevel=False)
        hierarchy.placeBesideCt(ctNode, doseNode)
        doseunits.markDoseInStudy(doseNode)
        nodes.showDose(doseNode, ctNode, prescription / factor if prescription else None)
        return doseNode

    def startExtractRadiomics(self, ctNode, segmentationNode, options: PatientOptions | None = None) -> DoseSegJob:
        """pyradiomics features of every segment on the CT (``doseseg radiomics``) into a table node.

        Raises DoseSegError at once when pyradiomics is not importable (see :mod:`dependencies`).
        """
        problem = dependencies.radiomicsProblem()
        if problem:
            raise DoseSegError(problem)
        options = options or PatientOptions()
        return self._job("Extract radiomics", ctNode, segmentationNode,
                         ["radiomics", *options.arguments("radiomics")],
                         lambda output: results.loadCsvTable(
                             self.scene, _findOutput(output, RADIOMICS_CSV), RADIOMICS_TABLE_NAME))

    def startRunAll(self, ctNode, segmentationNode, referenceDose=None, options: PatientOptions | None = None,
                    doseNode=None, outputFolder: str | Path | None = None, radiomics: bool | None = None
                    ) -> DoseSegJob:
        """The whole chain (``doseseg run``), its outputs loaded as the command wrote them.

        The job's result is a dict of the output nodes: dose, segmentation, dvhTables, dvhChart, metrics,
        constraints, radiomics and comparison (None when the command wrote no such table), and folder
        (``outputFolder``, or None when the outputs were temporary). The DVH, metric and goal tables are
        the command's CSV files, so they agree with its report.

        Args:
            referenceDose: a dose volume node (e.g. the TPS's RTDOSE): the patient folder's dose.nrrd, in Gy,
                which the command compares with.
            options: the command line's options for the patient (prescriptions, names, goals, site, ...).
            doseNode: the volume node the predicted dose goes into (a new one when None).
            outputFolder: a new or empty folder keeping every output (report.html included).
            radiomics: extract the radiomics features; when None, only if pyradiomics is importable
                (``--no-radiomics`` otherwise).
        """
        options = options or PatientOptions()
        if radiomics is None:
            radiomics = dependencies.radiomicsProblem() is None
        command = ["run", *options.arguments("run"), *([] if radiomics else ["--no-radiomics"])]

        def finish(volumes: dict) -> dict:
            return self.loadRunFolder(volumes["folder"], ctNode, segmentationNode, mainPrescription(options),
                                      doseNode, volumes) | {
                "folder": Path(outputFolder) if outputFolder is not None else None}

        return self._job("Run all", ctNode, segmentationNode, command, finish, doseNode=referenceDose,
                         output=outputFolder, read=runfolder.readRunVolumes)

    def loadRunFolder(self, folder: str | Path, ctNode, segmentationNode=None, prescription: float | None = None,
                      doseNode=None, volumes: dict | None = None) -> dict:
        """Load a ``doseseg run`` output folder of one patient: dose, missing OARs and the command's tables.

        Args:
            folder: the folder holding summary.json, dose.nrrd, segmentation.seg.nrrd, dvh.csv, ...
            ctNode: the CT the dose is shown over (reference geometry of a new segmentation).
            segmentationNode: receives the structures it lacks; a new node when None.
            prescription: Gy, top of the dose colour window.
            doseNode: the volume node to fill; a new one when None.
            volumes: the folder's large files already read (:func:`runfolder.readRunVolumes`); read now when None.

        Returns:
            dict of nodes: dose, segmentation, doseDifference (predicted minus reference, None without a
            reference dose) and those of :func:`runfolder.loadRunTables` (planQa when the run wrote
            plan_qa.csv); the tables and the chart go in the "DoseSeg results" folder under the CT's study;
            and messages: the applicability verdict and warnings of summary.json, in words.
        """
        volumes = volumes or runfolder.readRunVolumes(Path(folder))
        folder = volumes["folder"]
        segmentation = self.addMissingMasks(volumes["segmentation"], ctNode, segmentationNode)
        dose = self.showDoseVolume(volumes["dose"], ctNode, prescription, doseNode)
        difference = runfolder.loadDoseDifference(self.scene, volumes["difference"], ctNode)
        tables = runfolder.loadRunTables(self.scene, folder, segmentation, dose)
        hierarchy.placeInFolder(ctNode, hierarchy.RESULTS_FOLDER, difference, tables["dvhChart"],
                                *tables["dvhTables"], *(tables[key] for key in runfolder.TABLE_KEYS))
        messages = runfolder.summaryMessages(runfolder.readSummary(folder))
        for message in messages:
            log.warning("%s", message)
        return {"dose": dose, "segmentation": segmentation, "doseDifference": difference, **tables,
                "messages": messages}

    def showIsodose(self, doseNode, prescription: float | None = None) -> list:
        """Isodose lines of ``doseNode`` at percentages of ``prescription`` (Gy; refused without one) as contour
        models (see :mod:`isodose`) in a folder beside the dose."""
        models = isodose.isodoseModels(doseNode, prescription)
        hierarchy.placeInFolder(doseNode, hierarchy.ISODOSE_FOLDER, *models)
        return models

    def alignStructures(self, ctNode, segmentationNode, options: PatientOptions | None = None):
        """:meth:`startAlignStructures`, waiting for the result."""
        return self.startAlignStructures(ctNode, segmentationNode, options).wait()

    def segmentMissingOars(self, ctNode, segmentationNode=None, options: PatientOptions | None = None):
        """:meth:`startSegmentMissingOars`, waiting for the result."""
        return self.startSegmentMissingOars(ctNode, segmentationNode, options).wait()

    def predictDose(self, ctNode, segmentationNode, options: PatientOptions | None = None, doseNode=None):
        """:meth:`startPredictDose`, waiting for the result."""
        return self.startPredictDose(ctNode, segmentationNode, options, doseNode).wait()

    def extractRadiomics(self, ctNode, segmentationNode, options: PatientOptions | None = None):
        """:meth:`startExtractRadiomics`, waiting for the result."""
        return self.startExtractRadiomics(ctNode, segmentationNode, options).wait()

    def runAll(self, ctNode, segmentationNode, referenceDose=None, prescriptions: Mapping[str, float] | None = None,
               wait: bool = True, options: PatientOptions | None = None, doseNode=None,
               outputFolder: str | Path | None = None, radiomics: bool | None = None):
        """Run all (``doseseg run``) on the scene's CT and segments: the console's blocking form.

        Args:
            ctNode: the CT volume node.
            segmentationNode: the structures (e.g. SlicerRT's RTSTRUCT segmentation); segments keep their own
                extents and are aligned onto the CT by the command.
            referenceDose: the plan's dose volume node to compare with (unit from its study), or None.
            prescriptions: target name -> Gy, e.g. {"PTV1": 60}; added over ``options.prescriptions``.
            wait: block until done and return the outputs; False returns the running :class:`DoseSegJob`.
            options: the other command-line options for the patient.
            doseNode, outputFolder, radiomics: see :meth:`startRunAll`.

        Returns:
            dict with dose (under the CT's study, its unit on the study item), segmentation, metrics,
            dvhTables, dvhChart, constraints, radiomics, comparison, doseDifference and folder.

        Raises:
            DoseSegJobError: the step failed; its ``log`` holds the command's output.
        """
        job = self.startRunAll(ctNode, segmentationNode, referenceDose, patientOptions(options, prescriptions),
                               doseNode, outputFolder, radiomics)
        return job.wait() if wait else job

    # -- fast steps, in-process --------------------------------------------------------------------------------

    def computeDvh(self, doseNode, segmentationNode, prescriptions: Mapping[str, float] | None = None,
                   options: PatientOptions | None = None, ctNode=None, referenceDoseNode=None) -> dict:
        """DVHs, DVH metrics and clinical goals of every segment, as ``doseseg dvh`` computes them on the same
        contours (partial volume, see :mod:`evaluation`); blocks until done.

        An evaluation grid of up to ``IN_PROCESS_VOXELS`` voxels is evaluated in this process; a larger one
        (a clinical CT) by ``doseseg dvh`` in a background process (:meth:`startComputeDvh`), waited for.

        Args:
            doseNode: the dose volume (unit from its study: SlicerRT's DoseUnitName, CGY read as cGy).
            segmentationNode: the structures, each on its own extent (past the CT or the dose grid is fine).
            prescriptions: target name -> Gy, e.g. {"PTV1": 60}; added over ``options.prescriptions``.
            options: names, goals, DVH method and step (see :class:`PatientOptions`).
            ctNode: the evaluation grid (as ``doseseg dvh``'s ct.nrrd); by default the segmentation's reference
                volume, else the dose grid.
            referenceDoseNode: a second dose whose curves are added, dashed.

        Returns:
            dict with metrics (table node, the columns of dvh_metrics.csv), constraints (goal checks),
            dvhTables (one table node per structure, with SlicerRT's DVH attributes) and dvhChart.
        """
        options = patientOptions(options, prescriptions)
        outputs: dict = {}
        for node, label in ((doseNode, ""), (referenceDoseNode, REFERENCE_LABEL)):
            if node is None:
                continue
            gridNode = evaluation.evaluationGridNode(node, segmentationNode, ctNode)
            if nodes.voxelCount(gridNode) > IN_PROCESS_VOXELS:
                shown = self.startComputeDvh(node, segmentationNode, None, options, ctNode, label).wait()
            else:
                scene = evaluation.evaluateScene(node, segmentationNode, options, ctNode)
                shown = self.showEvaluation(node, segmentationNode, scene.result.dvhs, scene.result.metrics,
                                            scene.result.constraints, label)
            outputs = shown | {"dvhTables": outputs.get("dvhTables", []) + shown["dvhTables"]} if outputs else shown
        return outputs

    def startComputeDvh(self, doseNode, segmentationNode, prescriptions: Mapping[str, float] | None = None,
                        options: PatientOptions | None = None, ctNode=None, label: str = "") -> DoseSegJob:
        """:meth:`computeDvh` of one dose by ``doseseg dvh`` in a background process (the GUI never freezes);
        the job's result is the dict :meth:`computeDvh` returns. ``label`` "reference " adds dashed curves."""
        options = patientOptions(options, prescriptions)
        gridNode = evaluation.evaluationGridNode(doseNode, segmentationNode, ctNode)

        def finish(output: Path) -> dict:
            folder = _findOutput(output, "dvh_metrics.csv").parent
            return self.showEvaluation(doseNode, segmentationNode, results.readDvhCsv(folder / "dvh.csv"),
                                       read_csv(folder / "dvh_metrics.csv"), read_csv(folder / "constraints.csv"),
                                       label)

        return self._job("Compute DVH", gridNode, segmentationNode, ["dvh", *options.arguments("dvh")], finish,
                         doseNode=doseNode)

    def showEvaluation(self, doseNode, segmentationNode, dvhs: Mapping, metrics: list, constraints: list,
                       label: str = "") -> dict:
        """DVH table nodes and curves (SlicerRT's DVH attributes), the metrics and goals tables of one evaluated
        dose, in the results folder beside the dose; a ``label``-ed (reference) dose adds dashed curves only."""
        chartNode = (results.getOrAddNode(self.scene, "vtkMRMLPlotChartNode", results.DVH_CHART_NAME) if label
                     else results.dvhChart(self.scene))
        metricsTable = results.getOrAddNode(self.scene, "vtkMRMLTableNode", METRICS_TABLE_NAME)
        constraintsTable = results.getOrAddNode(self.scene, "vtkMRMLTableNode", CONSTRAINTS_TABLE_NAME)
        if not label:
            results.setTableRows(metricsTable, metrics, metrics_columns(metrics))
            results.setTableRows(constraintsTable, constraints, RESULT_COLUMNS)
        segmentation = segmentationNode.GetSegmentation()
        originals = {str(row["structure"]): str(row.get("original_name") or row["structure"]) for row in metrics}
        segmentIds = {name: segmentation.GetSegmentIdBySegmentName(original) for name, original in originals.items()}
        colors = {name: tuple(segmentation.GetSegment(segmentId).GetColor()) if segmentId
                  else structure_color(name) for name, segmentId in segmentIds.items()}
        tables = results.addDvhNodes(chartNode, dvhs, colors, label, dashed=bool(label))
        for table, (name, dvh) in zip(tables, dvhs.items(), strict=True):
            results.markSlicerRtDvh(table, dvh, doseNode, segmentationNode, segmentIds.get(name), metricsTable)
        hierarchy.placeInFolder(doseNode, hierarchy.RESULTS_FOLDER, chartNode, metricsTable, constraintsTable,
                                *tables)
        return {"metrics": metricsTable, "constraints": constraintsTable, "dvhTables": tables, "dvhChart": chartNode}

    def setDoseOpacity(self, opacity: float, doseNode=None) -> None:
        """Opacity of ``doseNode`` (any RT dose when None) in the slice views showing it over the CT."""
        nodes.setDoseOpacity(self.scene, opacity, doseNode)


def mainPrescription(options: PatientOptions) -> float | None:
    """The primary target's prescription among ``options``' (Gy; :func:`~DoseSegLib.core.case.primary_prescription`:
    the highest PTV's, as the run's report and normalisation), or None: 100 % of the isodose lines, the top of a
    dose colour window. ``GTV=74, PTV70=70`` gives 70 Gy, not the GTV boost's 74 Gy."""
    return primary_prescription(options.prescriptions)
