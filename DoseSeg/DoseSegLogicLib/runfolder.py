"""An output folder of ``doseseg run`` loaded into the scene, exactly as the command wrote it.

The tables of the scene are the command's own files (dvh.csv, dvh_metrics.csv,
constraints.csv, radiomics.csv, comparison.csv), never a recomputation: what the
module shows is what the HTML report of the same run says.
"""

from __future__ import annotations

import json
from pathlib import Path

from DoseSegLib.core.colors import structure_color
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib import Volume
from DoseSegLib.io.patient import read_dose, read_segmentation, read_volume

from . import nodes, results

METRICS_TABLE_NAME = "DoseSeg DVH metrics"
CONSTRAINTS_TABLE_NAME = "DoseSeg constraints"
RADIOMICS_TABLE_NAME = "DoseSeg radiomics"
COMPARISON_TABLE_NAME = "DoseSeg comparison"
PLAN_QA_TABLE_NAME = "DoseSeg plan QA"
OUTSIDE_WARNING = "outside the model's domain"  # how summary.json's warnings repeat an out-of-domain verdict
DIFFERENCE_ATTRIBUTE = "DoseSeg.DoseDifference"
DIFFERENCE_FILE = "dose_difference.nrrd"
TABLE_KEYS = ("metrics", "constraints", "radiomics", "comparison", "planQa")
REQUIRED_FILES = ("summary.json", "dose.nrrd", "segmentation.seg.nrrd", "dvh.csv", "dvh_metrics.csv",
                  "constraints.csv")


def checkRunFolder(folder: Path) -> Path:
    """``folder`` when it holds a complete ``doseseg run`` output, else a DoseSegError naming what is missing."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise DoseSegError(f"{folder}: not a complete `doseseg run` output (missing {', '.join(missing)})")
    return folder


def curveColors(segmentationNode) -> dict[str, tuple]:
    """Segment colours keyed by canonical structure name (the names the command writes)."""
    mapper = NameMapper()
    return {mapper.canonical(name): color for name, color in nodes.segmentColors(segmentationNode).items()}


def curveSegmentIds(segmentationNode) -> dict[str, str]:
    """Segment IDs keyed by canonical structure name."""
    mapper = NameMapper()
    segmentation = segmentationNode.GetSegmentation()
    return {mapper.canonical(segmentation.GetSegment(segmentId).GetName()): segmentId
            for segmentId in segmentation.GetSegmentIDs()}


def _optionalTable(scene, path: Path, name: str):
    return results.loadCsvTable(scene, path, name) if path.is_file() else None


def loadRunTables(scene, folder: Path, segmentationNode, doseNode=None) -> dict:
    """The DVH chart and tables of a run folder; curves take their segment's colour, reference curves dashed.
    The predicted dose's DVH tables carry SlicerRT's DVH attributes, referring to ``doseNode``.

    Returns:
        dict with dvhTables, dvhChart, metrics, constraints, radiomics and comparison
        (the last two None when the command wrote no such file).
    """
    colors = curveColors(segmentationNode)
    chartNode = results.dvhChart(scene)
    metrics = results.loadCsvTable(scene, folder / "dvh_metrics.csv", METRICS_TABLE_NAME)
    dvhs = results.readDvhCsv(folder / "dvh.csv")
    dvhTables = results.addDvhNodes(chartNode, dvhs, {n: colors.get(n) or structure_color(n) for n in dvhs})
    segmentIds = curveSegmentIds(segmentationNode)
    for table, (name, dvh) in zip(dvhTables, dvhs.items(), strict=True):
        results.markSlicerRtDvh(table, dvh, doseNode, segmentationNode, segmentIds.get(name), metrics)
    if (folder / "dvh_reference.csv").is_file():
        dvhTables += results.loadDvhCsv(chartNode, folder / "dvh_reference.csv", colors, "reference ", dashed=True)
    return {
        "dvhTables": dvhTables,
        "dvhChart": chartNode,
        "metrics": metrics,
        "constraints": results.loadCsvTable(scene, folder / "constraints.csv", CONSTRAINTS_TABLE_NAME),
        "radiomics": _optionalTable(scene, folder / "radiomics.csv", RADIOMICS_TABLE_NAME),
        "comparison": _optionalTable(scene, folder / "comparison.csv", COMPARISON_TABLE_NAME),
        "planQa": _optionalTable(scene, folder / "plan_qa.csv", PLAN_QA_TABLE_NAME),
    }


def readSummary(folder: Path) -> dict:
    """The run's summary.json ({} when it is not a JSON object)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DoseSegError(f"{folder / 'summary.json'}: cannot read it ({exc})") from exc
    return summary if isinstance(summary, dict) else {}


def summaryMessages(summary: dict) -> list[str]:
    """What the panel shows above the results: whether the patient is within the models' experience
    (``applicability``: in_distribution, score, threshold, reasons) and the run's ``warnings``."""
    messages = []
    applicability = summary.get("applicability")
    if isinstance(applicability, dict) and applicability.get("in_distribution") is False:
        reasons = [str(reason) for reason in applicability.get("reasons") or []]
        score, threshold = applicability.get("score"), applicability.get("threshold")
        measured = f" (score {score:.3g}, threshold {threshold:.3g})" if isinstance(score, (int, float)) and \
            isinstance(threshold, (int, float)) else ""
        messages.append("Outside the models' experience" + measured + (": " + "; ".join(reasons) if reasons else "")
                        + ". Treat the predicted dose with caution.")
    warnings = summary.get("warnings")
    if isinstance(warnings, list):  # the run's own line for the verdict above is not repeated
        messages += [str(warning) for warning in warnings
                     if str(warning).strip() and not (messages and str(warning).startswith(OUTSIDE_WARNING))]
    return messages


def readRunVolumes(folder: Path) -> dict:
    """The large files of a complete run folder, read (no scene needed: a job reads them in a worker thread):
    folder, dose (Gy), segmentation (masks by name) and difference (None without a reference dose)."""
    folder = checkRunFolder(folder)
    difference = folder / DIFFERENCE_FILE
    return {"folder": folder, "dose": read_dose(folder / "dose.nrrd"),
            "segmentation": read_segmentation(folder / "segmentation.seg.nrrd"),
            "difference": read_volume(difference) if difference.is_file() else None}


def loadDoseDifference(scene, volume: Volume | None, ctNode):
    """The dose difference (predicted minus reference, Gy) as "<CT> dose difference" (reused), None without one."""
    if volume is None:
        return None
    name = f"{ctNode.GetName()} dose difference"
    node = nodes.addOrUpdateVolumeNode(scene, scene.GetFirstNode(name, "vtkMRMLScalarVolumeNode"), volume, name)
    node.SetAttribute(DIFFERENCE_ATTRIBUTE, "1")
    for attribute, value in nodes.DOSE_UNIT_ATTRIBUTES.items():
        node.SetAttribute(attribute, value)
    return node
