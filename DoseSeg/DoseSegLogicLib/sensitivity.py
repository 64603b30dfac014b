"""The Sensitivity overlay's scene side: where a contour edit moves a dose metric, as a colour overlay.

The what-if worker returns d metric / d mask voxel in Gy per voxel of the CT grid; the overlay shows
it in Gy per cc of contour change (:func:`gyPerCc`, the one place of that conversion), with a
diverging colour table centred on zero (blue: adding the voxel lowers the metric, red: raises it;
values near zero transparent), a window symmetric about zero and a colour legend.
Imports only ``slicer`` (MRML and the Colors module's VTK logic), vtk, numpy and DoseSegLib.
"""

from __future__ import annotations

import logging

import numpy as np
import slicer

from DoseSegLib import Volume

from . import nodes

UNITS = "Gy per cc of contour change"
COLOR_TABLE_NAME = "DoseSeg_Sensitivity_ColorTable"
SENSITIVITY_ATTRIBUTE = "DoseSeg.Sensitivity"
WINDOW_PERCENTILE = 99.5  # of |value| over the non-zero voxels: one spike does not wash the map out
TRANSPARENT_FRACTION = 0.05  # |value| below this fraction of the window's half-width is not drawn
COLORS = 256

log = logging.getLogger(__name__)


def gyPerCc(perVoxel: Volume) -> Volume:
    """A map in Gy per voxel of its own grid as Gy per cc (divided by that grid's voxel volume in cc)."""
    return perVoxel.with_array((perVoxel.array / perVoxel.voxel_volume_cc).astype(np.float32))


def symmetricWindow(values: np.ndarray) -> float:
    """Half-width of the colour window centred on zero: the WINDOW_PERCENTILE-th percentile of |value|
    over the non-zero voxels (the largest |value| when that is zero; 1e-6 for an all-zero map)."""
    magnitude = np.abs(values[np.isfinite(values) & (values != 0)])
    if magnitude.size == 0:
        return 1e-6
    width = float(np.percentile(magnitude, WINDOW_PERCENTILE))
    return width if width > 0 else float(magnitude.max())


def divergingColor(fraction: float) -> tuple[float, float, float, float]:
    """RGBA at ``fraction`` of the window (0: -half-width, 0.5: zero, 1: +half-width): blue, white, red;
    transparent within TRANSPARENT_FRACTION of the half-width around zero (Slicer's volume display keeps a
    colour wherever the table's alpha is not zero, so a step rather than a ramp)."""
    t = 2.0 * min(max(fraction, 0.0), 1.0) - 1.0
    fade = 1.0 - abs(t)
    rgb = (fade, fade, 1.0) if t < 0 else (1.0, fade, fade)
    return (*rgb, 0.0 if abs(t) <= TRANSPARENT_FRACTION else 1.0)


def divergingColorTable(scene):
    """DoseSeg's blue-white-red colour table for signed maps (made once per scene)."""
    return nodes.colorTable(scene, COLOR_TABLE_NAME, divergingColor, COLORS)


def nodeName(structure: str, metric: str, wrt: str | None = None) -> str:
    """The overlay's node name, e.g. ``Sensitivity Mean[Gy] LeftParotid wrt PTV70``."""
    return f"Sensitivity {metric} {structure}" + (f" wrt {wrt}" if wrt and wrt != structure else "")


def showSensitivity(scene, perVoxel: Volume, structure: str, metric: str, wrt: str | None = None,
                    ctNode=None, volumeNode=None):
    """Show a sensitivity map (Gy per voxel) as a Gy-per-cc overlay over the CT in every slice view.

    Args:
        perVoxel: d metric / d mask voxel of ``structure``'s ``metric`` with respect to ``wrt``'s mask.
        ctNode: shown as background when given.
        volumeNode: a node to reuse (its voxels and name are replaced); a new one when None.

    Returns:
        The volume node (attributes: DoseSeg.Sensitivity.* and the units).
    """
    perCc = gyPerCc(perVoxel)
    name = nodeName(structure, metric, wrt)
    volumeNode = nodes.addOrUpdateVolumeNode(scene, volumeNode, perCc, name)
    volumeNode.SetName(name)  # a reused node gets the new structure's name
    for key, value in {"": "1", ".Structure": structure, ".Metric": metric, ".Wrt": wrt or structure,
                       ".Units": UNITS}.items():
        volumeNode.SetAttribute(SENSITIVITY_ATTRIBUTE + key, value)
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()
    width = symmetricWindow(perCc.array)
    display = volumeNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(divergingColorTable(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-width, width)
    display.AutoThresholdOff()
    display.ApplyThresholdOff()
    display.InterpolateOff()  # one voxel is one decision: add it to the contour or not
    for composite in nodes.sliceCompositeNodes(scene):
        if ctNode is not None:
            composite.SetBackgroundVolumeID(ctNode.GetID())
        composite.SetForegroundVolumeID(volumeNode.GetID())
        composite.SetForegroundOpacity(1.0)  # the colour table's alpha hides the values near zero
    addLegend(volumeNode, f"{metric} of {structure}\n({UNITS})")
    return volumeNode


def addLegend(volumeNode, title: str):
    """The node's colour legend (Slicer's Colors module), made once and retitled; None when the scene cannot
    make legend nodes (the Colors module registers them in Slicer)."""
    colorLogic = slicer.vtkSlicerColorLogic
    legend = colorLogic.GetColorLegendDisplayNode(volumeNode) or colorLogic.AddDefaultColorLegendDisplayNode(volumeNode)
    if legend is None:
        log.warning("no colour legend for '%s': this scene has no vtkMRMLColorLegendDisplayNode", volumeNode.GetName())
        return None
    legend.SetTitleText(title)
    legend.SetLabelFormat("%.3g")
    legend.SetVisibility(True)
    return legend
