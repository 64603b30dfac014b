"""Volume and segmentation nodes <-> DoseSegLib Volumes, and the dose display (SlicerRT conventions).

DoseSegLib works in LPS with arrays indexed ``[i, j, k]``; MRML works in RAS and
``slicer.util.arrayFromVolume`` is indexed ``[k, j, i]``. The two private
functions ``_imageFromArray`` / ``_arrayFromImage`` are the only place where the
axis order changes, and ``_rasMatrix`` / ``_volumeGeometry`` the only place
where LPS and RAS meet. Imports only ``slicer`` (MRML), vtk, numpy and DoseSegLib.
"""

from __future__ import annotations

import colorsys
import logging
import zlib

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from DoseSegLib import Volume
from DoseSegLib.case import OARS, target_prescription
from DoseSegLib.errors import DoseSegError

DOSE_ATTRIBUTE = "DicomRtImport.DoseVolume"
DOSE_COLOR_TABLE_NAME = "Dose_ColorTable"
LOWER_THRESHOLD_FRACTION = 0.05
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
OAR_COLORS = dict(zip(OARS, [
    (1.0, 0.75, 0.0), (1.0, 1.0, 0.0), (0.0, 0.55, 1.0), (0.0, 0.8, 0.8),
    (0.65, 0.4, 0.2), (0.3, 0.8, 0.3), (0.9, 0.9, 0.75),
]))

log = logging.getLogger(__name__)


def _imageFromArray(array: np.ndarray) -> vtk.vtkImageData:
    """A vtkImageData (unit spacing, zero origin) holding an ``[i, j, k]`` array."""
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)  # VTK_LONG_LONG volumes do not display
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape)
    flat = np.ascontiguousarray(array.transpose(2, 1, 0)).ravel()
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    return image


def _arrayFromImage(image: vtk.vtkImageData) -> np.ndarray:
    """A copy of a vtkImageData's scalars as an ``[i, j, k]`` array."""
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(dims[::-1]).transpose(2, 1, 0).copy()


def _rasMatrix(volume: Volume) -> vtk.vtkMatrix4x4:
    """The IJK-to-RAS matrix of a Volume's grid."""
    matrix = vtk.vtkMatrix4x4()
    ijkToRas = LPS_TO_RAS @ volume.index_to_lps
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, ijkToRas[row, column])
    return matrix


def _volumeGeometry(ijkToRas: vtk.vtkMatrix4x4) -> dict:
    """Spacing, origin and direction (LPS) of an IJK-to-RAS matrix."""
    ijkToLps = LPS_TO_RAS @ np.array([[ijkToRas.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.linalg.norm(ijkToLps[:3, :3], axis=0)
    return {"spacing": tuple(spacing), "origin": tuple(ijkToLps[:3, 3]), "direction": ijkToLps[:3, :3] / spacing}


def _worldMatrix(node, ijkToRas: vtk.vtkMatrix4x4) -> vtk.vtkMatrix4x4:
    """``ijkToRas`` followed by the node's parent transforms; a non-linear transform must be hardened first."""
    transformNode = node.GetParentTransformNode()
    if transformNode is None:
        return ijkToRas
    if not transformNode.IsTransformToWorldLinear():
        raise DoseSegError(f"'{node.GetName()}' is under a non-linear transform: harden the transform first")
    toWorld = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(toWorld)
    result = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(toWorld, ijkToRas, result)
    return result


def volumeFromNode(volumeNode) -> Volume:
    """The node's voxels and world geometry (parent linear transforms included) as a Volume."""
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise DoseSegError("the volume node has no image data")
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    return Volume(_arrayFromImage(volumeNode.GetImageData()), **_volumeGeometry(_worldMatrix(volumeNode, ijkToRas)))


def updateVolumeNode(volumeNode, volume: Volume) -> None:
    """Replace the node's voxels and geometry with a Volume's."""
    volumeNode.SetIJKToRASMatrix(_rasMatrix(volume))
    volumeNode.SetAndObserveImageData(_imageFromArray(volume.array))


def addVolumeNode(scene, volume: Volume, name: str, className: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in ``scene`` holding ``volume``, with display nodes."""
    volumeNode = scene.AddNewNodeByClass(className, name)
    updateVolumeNode(volumeNode, volume)
    volumeNode.CreateDefaultDisplayNodes()
    return volumeNode


def _orientedImage(volume: Volume, withVoxels: bool = True) -> slicer.vtkOrientedImageData:
    """A vtkOrientedImageData on the Volume's grid, holding its voxels or (``withVoxels`` False) only its geometry."""
    image = slicer.vtkOrientedImageData()
    if withVoxels:
        image.ShallowCopy(_imageFromArray(volume.array))
    else:
        image.SetExtent(0, volume.shape[0] - 1, 0, volume.shape[1] - 1, 0, volume.shape[2] - 1)
    image.SetImageToWorldMatrix(_rasMatrix(volume))
    return image


def segmentMasks(segmentationNode, reference: Volume) -> dict[str, Volume]:
    """Every non-empty segment as a boolean mask on ``reference``'s grid, keyed by segment name.

    Overlapping segments stay independent; parent transforms are applied. Segments
    that miss the reference grid entirely are left out with a warning.
    """
    segmentationNode.CreateBinaryLabelmapRepresentation()
    segmentation = segmentationNode.GetSegmentation()
    referenceImage = _orientedImage(reference, withVoxels=False)
    masks = {}
    for segmentId in segmentation.GetSegmentIDs():
        name = segmentation.GetSegment(segmentId).GetName()
        if name in masks:
            raise DoseSegError(f"segmentation '{segmentationNode.GetName()}' has two segments named '{name}'")
        labelmap = slicer.vtkOrientedImageData()
        segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
        slicer.vtkSlicerSegmentationsModuleLogic.ApplyParentTransformToOrientedImageData(segmentationNode, labelmap)
        resampled = slicer.vtkOrientedImageData()
        if slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, referenceImage, resampled, False, True
        ):
            mask = _arrayFromImage(resampled) > 0
            if mask.any():
                masks[name] = reference.with_array(mask)
                continue
        log.warning("segment '%s' lies outside the grid and was left out", name)
    return masks


def segmentColor(name: str) -> tuple[float, float, float]:
    """Display colour of a structure: fixed for the OARs, red to pink by dose level for targets."""
    if name in OAR_COLORS:
        return OAR_COLORS[name]
    level = target_prescription(name)
    if level is not None:
        shade = min(max((70.0 - level) / 30.0, 0.0), 1.0)
        return (1.0, 0.45 * shade, 0.7 * shade)
    hue = (zlib.crc32(name.encode()) % 360) / 360.0
    return colorsys.hsv_to_rgb(hue, 0.6, 0.9)


def addSegments(segmentationNode, masks: dict[str, Volume]) -> list[str]:
    """Add each mask as a segment named and coloured after its structure; returns the segment IDs."""
    return [
        segmentationNode.AddSegmentFromBinaryLabelmapRepresentation(_orientedImage(mask), name, segmentColor(name))
        for name, mask in masks.items()
    ]


def doseColorTable(scene):
    """SlicerRT's dose colour table when present, else a blue-to-red table of the same name."""
    existing = scene.GetFirstNodeByName(DOSE_COLOR_TABLE_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    colorNode = scene.AddNewNodeByClass("vtkMRMLColorTableNode", DOSE_COLOR_TABLE_NAME)
    colorNode.SetTypeToUser()
    colorNode.SetNumberOfColors(256)
    for index in range(256):
        red, green, blue = colorsys.hsv_to_rgb(0.667 * (1.0 - index / 255.0), 1.0, 1.0)
        colorNode.SetColor(index, red, green, blue, 1.0)
    return colorNode


def showDose(doseNode, ctNode=None, prescription: float | None = None, opacity: float = 0.5) -> None:
    """Mark ``doseNode`` as an RT dose, colour it, hide low doses, and show it over the CT in every slice view.

    The colour window runs from 0 Gy to the larger of the maximum dose and the
    prescription; doses below 5 % of the prescription (or of the maximum) are transparent.
    """
    scene = doseNode.GetScene()
    doseNode.SetAttribute(DOSE_ATTRIBUTE, "1")
    if doseNode.GetDisplayNode() is None:
        doseNode.CreateDefaultDisplayNodes()
    maxDose = float(doseNode.GetImageData().GetScalarRange()[1])
    top = max(maxDose, prescription or 0.0, 1e-3)
    display = doseNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(doseColorTable(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, top)
    display.AutoThresholdOff()
    display.SetThreshold(LOWER_THRESHOLD_FRACTION * (prescription or top), top + 1.0)
    display.ApplyThresholdOn()
    display.InterpolateOn()
    for composite in _sliceCompositeNodes(scene):
        if ctNode is not None:
            composite.SetBackgroundVolumeID(ctNode.GetID())
        composite.SetForegroundVolumeID(doseNode.GetID())
    setDoseOpacity(scene, opacity)


def setDoseOpacity(scene, opacity: float) -> None:
    """Foreground (dose) opacity of every slice view."""
    for composite in _sliceCompositeNodes(scene):
        composite.SetForegroundOpacity(opacity)


def _sliceCompositeNodes(scene) -> list:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    nodes.UnRegister(scene)  # the wrapper already holds the returned collection
    return [nodes.GetItemAsObject(index) for index in range(nodes.GetNumberOfItems())]
