"""DVH, metric, constraint and radiomics results as MRML table nodes, plot series and one DVH plot chart."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

from DoseSegLib.analysis.dvh import DVH, DVH_COLUMNS
from DoseSegLib.core.colors import structure_color
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.tables import columns_of, format_value, read_csv

DVH_CHART_NAME = "DoseSeg DVH"
DVH_UNITS = {"Dose": "Gy", "Volume": "%", "VolumeCc": "cm3"}
# What SlicerRT's Dose Volume Histogram module sets on its DVH table nodes (vtkSlicerDoseVolumeHistogramModuleLogic,
# vtkMRMLDoseVolumeHistogramNode), so that its DVH Comparison and plots list DoseSeg's tables with its own.
SLICERRT_DVH_ATTRIBUTE = "DoseVolumeHistogram.DVH"
SLICERRT_SEGMENT_ID_ATTRIBUTE = "DoseVolumeHistogram.SegmentID"
SLICERRT_STRUCTURE_NAME_ATTRIBUTE = "DoseVolumeHistogram.StructureName"
SLICERRT_VOLUME_CC_ATTRIBUTE = "DoseVolumeHistogram.Volume (cc)"
SLICERRT_DOSE_VOLUME_ROLE = "doseVolumeRef"
SLICERRT_SEGMENTATION_ROLE = "segmentationRef"
SLICERRT_METRICS_TABLE_ROLE = "dvhMetricsTableRef"


def getOrAddNode(scene, className: str, name: str):
    """The node of ``className`` named ``name``, added to ``scene`` when there is none (reruns reuse nodes)."""
    return scene.GetFirstNode(name, className) or scene.AddNewNodeByClass(className, name)


def _numbers(values: Sequence) -> np.ndarray | None:
    """``values`` as floats (None and empty text as NaN), or None when any value is not a number."""
    numbers = []
    for value in values:
        if value is None or value == "":
            numbers.append(math.nan)
            continue
        if isinstance(value, bool):
            return None
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            return None
    return np.asarray(numbers, dtype=np.float64)


def setTableColumns(tableNode, columns: Mapping[str, Sequence]) -> None:
    """Replace the table's content: numeric columns as doubles, any other column as text."""
    table = vtk.vtkTable()
    for name, values in columns.items():
        numbers = _numbers(values)
        if numbers is not None:
            array = numpy_support.numpy_to_vtk(numbers, deep=True)
        else:
            array = vtk.vtkStringArray()
            for value in values:
                array.InsertNextValue(format_value(value))
        array.SetName(name)
        table.AddColumn(array)
    tableNode.SetAndObserveTable(table)


def setTableRows(tableNode, rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> None:
    """Replace the table's content with one row per dict (missing keys become empty cells)."""
    columns = list(columns) if columns is not None else columns_of(rows)
    setTableColumns(tableNode, {column: [row.get(column) for row in rows] for column in columns})


def loadCsvTable(scene, path: str | Path, name: str):
    """A table node named ``name`` holding a CSV file written by the DoseSegLib command line."""
    rows = read_csv(path)
    tableNode = getOrAddNode(scene, "vtkMRMLTableNode", name)
    setTableRows(tableNode, rows)
    return tableNode


def dvhChart(scene):
    """The module's DVH plot chart, emptied of its previous series."""
    chartNode = getOrAddNode(scene, "vtkMRMLPlotChartNode", DVH_CHART_NAME)
    chartNode.RemoveAllPlotSeriesNodeIDs()
    chartNode.SetTitle("Dose volume histogram")
    chartNode.SetXAxisTitle("Dose [Gy]")
    chartNode.SetYAxisTitle("Volume [%]")
    return chartNode


def addDvhNodes(
    chartNode,
    dvhs: Mapping[str, DVH],
    colors: Mapping[str, Sequence[float]],
    label: str = "",
    dashed: bool = False,
) -> list:
    """One table (columns Dose, Volume, VolumeCc) and one plot series per structure, added to ``chartNode``.

    Args:
        chartNode: the plot chart that shows the curves.
        dvhs: cumulative DVHs by structure name.
        colors: curve colour of each structure (its segment's colour).
        label: added to node names, e.g. "reference " for a second dose.
        dashed: draw the curves dashed (reference dose).

    Returns:
        The table nodes, in the order of ``dvhs``.
    """
    scene = chartNode.GetScene()
    tableNodes = []
    for name, dvh in dvhs.items():
        title = f"DVH {label}{name}"
        tableNode = getOrAddNode(scene, "vtkMRMLTableNode", title)
        setTableColumns(tableNode, {"Dose": dvh.dose_gy, "Volume": dvh.volume_pct, "VolumeCc": dvh.volume_cc})
        for column, unit in DVH_UNITS.items():
            tableNode.SetColumnUnitLabel(column, unit)
        tableNode.SetAttribute("DoseSeg.Structure", name)
        seriesNode = getOrAddNode(scene, "vtkMRMLPlotSeriesNode", title)
        seriesNode.SetAndObserveTableNodeID(tableNode.GetID())
        seriesNode.SetXColumnName("Dose")
        seriesNode.SetYColumnName("Volume")
        seriesNode.SetPlotType(seriesNode.PlotTypeScatter)
        seriesNode.SetMarkerStyle(seriesNode.MarkerStyleNone)
        seriesNode.SetLineStyle(seriesNode.LineStyleDash if dashed else seriesNode.LineStyleSolid)
        seriesNode.SetColor(*colors[name])
        chartNode.AddAndObservePlotSeriesNodeID(seriesNode.GetID())
        tableNodes.append(tableNode)
    return tableNodes


def markSlicerRtDvh(tableNode, dvh: DVH, doseNode, segmentationNode, segmentId: str | None,
                    metricsTableNode=None) -> None:
    """Give a DVH table node the attributes and references SlicerRT's DVH module gives its own tables."""
    tableNode.SetAttribute(SLICERRT_DVH_ATTRIBUTE, "1")
    tableNode.SetAttribute(SLICERRT_STRUCTURE_NAME_ATTRIBUTE, tableNode.GetAttribute("DoseSeg.Structure"))
    tableNode.SetAttribute(SLICERRT_VOLUME_CC_ATTRIBUTE, f"{float(dvh.volume_cc[0]) if len(dvh.volume_cc) else 0.0:g}")
    if segmentId:
        tableNode.SetAttribute(SLICERRT_SEGMENT_ID_ATTRIBUTE, segmentId)
    for role, node in ((SLICERRT_DOSE_VOLUME_ROLE, doseNode), (SLICERRT_SEGMENTATION_ROLE, segmentationNode),
                       (SLICERRT_METRICS_TABLE_ROLE, metricsTableNode)):
        tableNode.SetNodeReferenceID(role, node.GetID() if node is not None else None)


def readDvhCsv(path: str | Path) -> dict[str, DVH]:
    """The DVHs of a ``dvh.csv`` written by the command line (columns structure, dose_gy, volume_cc, volume_pct)."""
    curves: dict[str, list] = {}
    for row in read_csv(path, DVH_COLUMNS):
        curves.setdefault(row["structure"], []).append([row["dose_gy"], row["volume_cc"], row["volume_pct"]])
    dvhs = {}
    for name, points in curves.items():
        try:
            values = np.asarray(points, dtype=np.float64)
        except ValueError as exc:
            raise DoseSegError(f"{path}: DVH of '{name}' holds a value that is not a number ({exc})") from exc
        dvhs[name] = DVH(dose_gy=values[:, 0], volume_cc=values[:, 1], volume_pct=values[:, 2])
    return dvhs


def loadDvhCsv(chartNode, path: str | Path, colors: Mapping[str, Sequence[float]], label: str = "",
               dashed: bool = False) -> list:
    """:func:`addDvhNodes` for the DVHs of a ``dvh.csv``; structures without a colour get DoseSegLib's."""
    dvhs = readDvhCsv(path)
    colors = {name: colors.get(name) or structure_color(name) for name in dvhs}
    return addDvhNodes(chartNode, dvhs, colors, label, dashed)
