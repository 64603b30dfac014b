"""Isodose lines as contour models: one closed surface per dose level, shown as lines in the slice views.

The fallback when SlicerRT's Isodose module is not installed (the module's Logic uses it when
it is). Levels are percentages of the prescription, refused without one (a percentage of the
maximum dose reads as coverage it is not); each surface is computed on the dose voxels, in the
dose's unit (its study's, see :mod:`doseunits`), then placed in RAS with its IJK-to-RAS matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import vtk

from DoseSegLib.core.errors import DoseSegError

from . import doseunits, nodes

ISODOSE_LEVELS_PERCENT = (30, 50, 80, 95, 100, 107)
ISODOSE_ATTRIBUTE = "DoseSeg.IsodoseGy"


def _surface(doseNode, levelGy: float) -> vtk.vtkPolyData:
    """The isosurface of ``levelGy`` in RAS (parent transforms are left to the model's own transform)."""
    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(doseNode.GetImageData())
    contour.SetValue(0, levelGy)
    contour.ComputeNormalsOff()
    ijkToRas = vtk.vtkMatrix4x4()
    doseNode.GetIJKToRASMatrix(ijkToRas)
    transform = vtk.vtkTransform()
    transform.SetMatrix(ijkToRas)
    place = vtk.vtkTransformPolyDataFilter()
    place.SetInputConnection(contour.GetOutputPort())
    place.SetTransform(transform)
    place.Update()
    surface = vtk.vtkPolyData()
    surface.DeepCopy(place.GetOutput())
    return surface


def isodoseModels(doseNode, prescription: float | None = None,
                  levelsPercent: Sequence[float] = ISODOSE_LEVELS_PERCENT) -> list:
    """One model node per level present in the dose ("Isodose 95%", reused on reruns), lines in the slice views.

    Args:
        doseNode: the dose volume (Gy).
        prescription: Gy, 100 % of the levels.
        levelsPercent: the levels, in percent of the prescription.

    Returns:
        The model nodes, lowest level first; levels above the maximum dose get none.

    Raises:
        DoseSegError: no prescription.
    """
    if not prescription or prescription <= 0:
        raise DoseSegError("isodose levels are percentages of the prescription: give the prescription (Gy)")
    scene = doseNode.GetScene()
    gyPerUnit = doseunits.gyPerUnit(doseNode)
    maxDose = nodes.maximumOf(doseNode) * gyPerUnit
    reference = prescription
    top = max(maxDose, reference)
    models = []
    for percent in sorted(levelsPercent):
        levelGy = reference * percent / 100.0
        name = f"Isodose {percent:g}%"
        existing = scene.GetFirstNode(name, "vtkMRMLModelNode")
        if levelGy >= maxDose or levelGy <= 0:
            if existing is not None:
                scene.RemoveNode(existing)
            continue
        model = existing or scene.AddNewNodeByClass("vtkMRMLModelNode", name)
        model.SetAndObservePolyData(_surface(doseNode, levelGy / gyPerUnit))
        model.SetAttribute(ISODOSE_ATTRIBUTE, f"{levelGy:.4g}")
        model.SetDescription(f"{percent:g}% of {reference:.4g} Gy = {levelGy:.4g} Gy isodose of {doseNode.GetName()}")
        model.SetAndObserveTransformNodeID(doseNode.GetTransformNodeID())
        if model.GetDisplayNode() is None:
            model.CreateDefaultDisplayNodes()
        display = model.GetDisplayNode()
        display.SetColor(*nodes.doseColor(levelGy / top))
        display.SetVisibility2D(True)
        display.SetVisibility3D(False)
        display.SetSliceIntersectionThickness(2)
        models.append(model)
    return models
