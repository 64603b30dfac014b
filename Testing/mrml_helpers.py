"""Helpers of the MRML tests: DoseSeg/ on sys.path (for DoseSegLogicLib), node matrices and table contents."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import slicer
import vtk

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "DoseSeg") not in sys.path:
    sys.path.insert(0, str(REPO / "DoseSeg"))


def matrix_of(vtkMatrix) -> np.ndarray:
    return np.array([[vtkMatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix_of(matrix)


def column(tableNode, name: str) -> np.ndarray:
    return np.asarray(slicer.util.arrayFromTableColumn(tableNode, name))


def table_rows(tableNode) -> list[dict[str, object]]:
    """The table's rows: floats from numeric columns, text from the others."""
    table = tableNode.GetTable()
    columns = [table.GetColumn(c) for c in range(table.GetNumberOfColumns())]
    return [
        {array.GetName(): array.GetValue(r) for array in columns}
        for r in range(table.GetNumberOfRows())
    ]
