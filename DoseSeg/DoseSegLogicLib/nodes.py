"""Volume and segmentation nodes <-> DoseSegLib Volumes, segment colours, and the dose display (SlicerRT conventions).

DoseSegLib works in LPS with arrays indexed ``[i, j, k]``; MRML works in RAS and
``slicer.util.arrayFromVolume`` is indexed ``[k, j, i]``. The two private
functions ``_imageFromArray`` / ``_arrayFromImage`` are the only place where the
axis order changes, and ``_rasMatrix`` / ``_volumeGeometry`` the only place
where LPS and RAS meet. Imports only ``slicer`` (MRML), vtk, numpy and DoseSegLib.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Callable, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from DoseSegLib import Volume
from DoseSegLib.core.alignment import outside_fraction, resample_mask
from DoseSegLib.core.colors import structure_color
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import crop_box, mask_box

DOSE_ATTRIBUTE = "DicomRtImport.DoseVolume"
# SlicerRT's DVH and Isodose modules read the unit from these (DoseSeg's doses are in Gy)
DOSE_UNIT_ATTRIBUTES = {"DicomRtImport.DoseUnitName": "GY", "DicomRtImport.DoseUnitValue": "1.0"}
DOSE_COLOR_TABLE_NAME = "Dose_ColorTable"
LOWER_THRESHOLD_FRACTION = 0.05
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

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
    """A copy of a vtkImageData's scalars as an ``[i, j, k]`` array, in Fortran order (VTK's i-fastest layout):
    a straight copy, never a transposing one."""
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(dims[::-1]).transpose(2, 1, 0).copy(order="K")


def _rasMatrix(volume: Volume) -> vtk.vtkMatrix4x4:
    """The IJK-to-RAS matrix of a Volume's grid."""
    matrix = vtk.vtkMatrix4x4()
    ijkToRas = LPS_TO_RAS @ volume.index_to_lps
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, ijkToRas[row, column])
    return matrix


def _volumeGeometry(ijkToRas: vtk.vtkMatrix4x4, firstIndex: Sequence[int] = (0, 0, 0)) -> dict:
    """Spacing, origin and direction (LPS) of an IJK-to-RAS matrix, the origin at voxel ``firstIndex``."""
    ijkToLps = LPS_TO_RAS @ np.array([[ijkToRas.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.linalg.norm(ijkToLps[:3, :3], axis=0)
    origin = ijkToLps @ np.append(np.asarray(firstIndex, dtype=float), 1.0)
    return {"spacing": tuple(spacing), "origin": tuple(origin[:3]), "direction": ijkToLps[:3, :3] / spacing}


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


def voxelCount(volumeNode) -> int:
    """The number of voxels of the node's grid."""
    dims = volumeNode.GetImageData().GetDimensions()
    return int(dims[0]) * int(dims[1]) * int(dims[2])


def updateVolumeNode(volumeNode, volume: Volume) -> None:
    """Replace the node's voxels and geometry with a Volume's."""
    volumeNode.SetIJKToRASMatrix(_rasMatrix(volume))
    volumeNode.SetAndObserveImageData(_imageFromArray(volume.array))


def addVolumeNode(scene, volume: Volume, name: str, className: str = "vtkMRMLScalarVolumeNode",
                  autoWindowLevel: bool = True):
    """A new volume node in ``scene`` holding ``volume``, with display nodes.

    Args:
        autoWindowLevel: False for a volume whose window the caller sets (a dose): no histogram of a
            clinical-size volume is computed for a window that is replaced at once.
    """
    volumeNode = scene.AddNewNodeByClass(className, name)
    if autoWindowLevel or className != "vtkMRMLScalarVolumeNode":
        updateVolumeNode(volumeNode, volume)
        volumeNode.CreateDefaultDisplayNodes()
        return volumeNode
    display = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display.AutoWindowLevelOff()
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    volumeNode.SetAndObserveDisplayNodeID(display.GetID())
    updateVolumeNode(volumeNode, volume)
    return volumeNode


def addOrUpdateVolumeNode(scene, volumeNode, volume: Volume, name: str, autoWindowLevel: bool = True):
    """``volumeNode`` with its voxels and geometry replaced by ``volume`` (name and display kept), or, when it is
    None, a new node ``name`` (see :func:`addVolumeNode`)."""
    if volumeNode is None:
        return addVolumeNode(scene, volume, name, autoWindowLevel=autoWindowLevel)
    updateVolumeNode(volumeNode, volume)
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


def _maskFromOrientedImage(image: slicer.vtkOrientedImageData) -> Volume | None:
    """A labelmap as a boolean Volume cropped to its set voxels (own grid), or None when it has no voxel set."""
    if image.GetPointData().GetScalars() is None:
        return None
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    inside = flat.reshape(dims[::-1]).transpose(2, 1, 0) > 0  # a new boolean array: no view of VTK memory is kept
    if not inside.any():
        return None
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return crop_box(Volume(inside, **_volumeGeometry(matrix, image.GetExtent()[::2])), mask_box(inside))


def segmentIds(segmentationNode) -> list[str]:
    """The segment IDs of the node, in order."""
    return list(segmentationNode.GetSegmentation().GetSegmentIDs())


def segmentMask(segmentationNode, segmentId: str) -> Volume | None:
    """One segment as a boolean mask on its own labelmap grid (parent transforms applied), cropped to its voxels;
    None when it is empty. Segments given as closed surfaces are converted on the segmentation's reference
    geometry, grown to hold the whole surface (as SlicerRT's import leaves them)."""
    labelmap = slicer.vtkOrientedImageData()
    segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
    slicer.vtkSlicerSegmentationsModuleLogic.ApplyParentTransformToOrientedImageData(segmentationNode, labelmap)
    return _maskFromOrientedImage(labelmap)


def maskOnGrid(name: str, mask: Volume, grid: Volume) -> Volume | None:
    """``mask`` resampled onto ``grid`` through physical coordinates (DoseSegLib's alignment: exact when the
    grids share voxel centres); None, with a warning, when it misses the grid. A part past the grid is clipped."""
    outside = outside_fraction(mask, grid)
    aligned = resample_mask(mask, grid) if outside < 1.0 else None
    if aligned is None or not aligned.array.any():
        log.warning("segment '%s' lies outside the grid and was left out", name)
        return None
    if outside > 0:
        log.warning("segment '%s': %.1f%% of it lies outside the grid and was clipped", name, 100 * outside)
    return aligned


def segmentMasks(segmentationNode, reference: Volume | None = None, segmentIdList: Sequence[str] | None = None
                 ) -> dict[str, Volume]:
    """Every non-empty segment as a boolean mask keyed by segment name, parent transforms applied.

    Args:
        segmentationNode: the segmentation; overlapping segments stay independent.
        reference: the grid to resample onto (see :func:`maskOnGrid`; segments that miss it are left out with a
            warning); when None, each segment on its own labelmap grid cropped to its voxels.
        segmentIdList: only these segments (all when None).
    """
    segmentationNode.CreateBinaryLabelmapRepresentation()
    segmentation = segmentationNode.GetSegmentation()
    masks: dict[str, Volume] = {}
    for segmentId in segmentIdList if segmentIdList is not None else segmentIds(segmentationNode):
        name = segmentation.GetSegment(segmentId).GetName()
        if name in masks:
            raise DoseSegError(f"segmentation '{segmentationNode.GetName()}' has two segments named '{name}'")
        mask = segmentMask(segmentationNode, segmentId)
        if mask is None:
            log.warning("segment '%s' is empty and was left out", name)
            continue
        if reference is not None:
            mask = maskOnGrid(name, mask, reference)
        if mask is not None:
            masks[name] = mask
    return masks


def newSegmentationNode(scene, name: str, referenceVolumeNode):
    """An empty segmentation node on ``referenceVolumeNode``'s geometry, with display nodes."""
    segmentationNode = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    return segmentationNode


def segmentColors(segmentationNode) -> dict[str, tuple[float, float, float]]:
    """Each segment's colour, keyed by segment name."""
    segmentation = segmentationNode.GetSegmentation()
    return {
        segmentation.GetSegment(segmentId).GetName(): tuple(segmentation.GetSegment(segmentId).GetColor())
        for segmentId in segmentation.GetSegmentIDs()
    }


def addSegments(
    segmentationNode, masks: dict[str, Volume], colors: dict[str, Sequence[float]] | None = None
) -> list[str]:
    """Add each mask as a segment of that name; colours from ``colors``, else DoseSegLib's structure colour.

    Returns:
        The new segment IDs, in the order of ``masks``.
    """
    colors = colors or {}
    return [
        segmentationNode.AddSegmentFromBinaryLabelmapRepresentation(
            _orientedImage(mask), name, colors.get(name) or structure_color(name)
        )
        for name, mask in masks.items()
    ]


def colorTable(scene, name: str, colorAt: Callable[[float], Sequence[float]], count: int = 256):
    """The colour table node ``name`` of the scene, else a new one of ``count`` colours: ``colorAt(fraction)``
    (RGB, or RGBA) at each fraction 0..1 of the table."""
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    colorNode = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    colorNode.SetTypeToUser()
    colorNode.SetNumberOfColors(count)
    for index in range(count):
        colorNode.SetColor(index, *(*colorAt(index / (count - 1)), 1.0)[:4])
    return colorNode


def doseColorTable(scene):
    """SlicerRT's dose colour table when present, else a blue-to-red table of the same name."""
    return colorTable(scene, DOSE_COLOR_TABLE_NAME, doseColor)


def doseColor(fraction: float) -> tuple[float, float, float]:
    """The colour of a dose at ``fraction`` of the top of the colour window: blue (0) to red (1)."""
    return colorsys.hsv_to_rgb(0.667 * (1.0 - min(max(fraction, 0.0), 1.0)), 1.0, 1.0)


def markDose(volumeNode) -> None:
    """Mark a volume as an RT dose, the way SlicerRT's DICOM-RT import does; a node without a unit gets Gy's
    (see :mod:`doseunits` for the unit on the study item, which SlicerRT reads first)."""
    volumeNode.SetAttribute(DOSE_ATTRIBUTE, "1")
    if not volumeNode.GetAttribute("DicomRtImport.DoseUnitName"):
        for name, value in DOSE_UNIT_ATTRIBUTES.items():
            volumeNode.SetAttribute(name, value)


def showDose(doseNode, ctNode=None, prescription: float | None = None, opacity: float = 0.5) -> None:
    """Mark ``doseNode`` as an RT dose, colour it, hide low doses, and show it over the CT in every slice view.

    The colour window runs from 0 to the larger of the maximum dose and the prescription (both
    in the node's unit); doses below 5 % of the prescription (or of the maximum) are transparent.
    """
    scene = doseNode.GetScene()
    markDose(doseNode)
    if doseNode.GetDisplayNode() is None:
        doseNode.CreateDefaultDisplayNodes()
    maxDose = maximumOf(doseNode)
    top = max(maxDose, prescription or 0.0, 1e-3)
    display = doseNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(doseColorTable(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, top)
    display.AutoThresholdOff()
    display.SetThreshold(LOWER_THRESHOLD_FRACTION * (prescription or top), top + 1.0)
    display.ApplyThresholdOn()
    display.InterpolateOn()
    for composite in sliceCompositeNodes(scene):
        if ctNode is not None:
            composite.SetBackgroundVolumeID(ctNode.GetID())
        composite.SetForegroundVolumeID(doseNode.GetID())
    setDoseOpacity(scene, opacity, doseNode)


def maximumOf(volumeNode) -> float:
    """The largest voxel value of a volume node (NumPy over VTK's memory: several times VTK's scalar range)."""
    scalars = volumeNode.GetImageData().GetPointData().GetScalars()
    return float(numpy_support.vtk_to_numpy(scalars).max()) if scalars.GetNumberOfTuples() else 0.0


def setDoseOpacity(scene, opacity: float, doseNode=None) -> None:
    """Foreground opacity of the slice views showing ``doseNode`` (any RT dose when None); other views keep theirs."""
    for composite in sliceCompositeNodes(scene):
        foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if foreground is None:
            continue
        if foreground is doseNode or (doseNode is None and foreground.GetAttribute(DOSE_ATTRIBUTE) == "1"):
            composite.SetForegroundOpacity(opacity)


def sliceCompositeNodes(scene) -> list:
    """The scene's slice composite nodes (one per slice view)."""
    found = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    found.UnRegister(scene)  # the wrapper already holds the returned collection
    return [found.GetItemAsObject(index) for index in range(found.GetNumberOfItems())]
