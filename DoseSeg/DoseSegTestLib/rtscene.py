"""A scene as SlicerRT's DICOM-RT import leaves a plan, built from DoseSegLib's phantom: the module's test scene.

- patient > study in the subject hierarchy, holding the CT, the structure set and the dose;
- the RTSTRUCT as a segmentation node whose segments keep their own extents: BODY reaching past
  the CT on every side, the spinal cord a closed surface running past the last slice, the larynx
  rasterised finer than the CT, vendor names (BRSTEM, Parotid_L, Cord) and a TPS target name
  (PTV1) whose dose only a prescription gives;
- the RTDOSE smaller than the CT, marked ``DicomRtImport.DoseVolume``, its voxels in cGy with
  ``DoseUnitName`` CGY and ``DoseUnitValue`` on the study item, none on the node.

Imports only slicer (MRML), vtk, numpy and DoseSegLib: used by the pytest suite (slicer-core),
the benchmark and the self-test inside Slicer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from DoseSegLogicLib import hierarchy, nodes

from DoseSegLib import Case, Volume
from DoseSegLib.core.volume import crop_box
from DoseSegLib.io.phantom import make_phantom

VENDOR_NAMES = {"Brainstem": "BRSTEM", "LeftParotid": "Parotid_L", "RightParotid": "Parotid_R", "PTV70": "PTV1",
                "Mandible": "Mandible", "Esophagus": "Esophagus", "PTV56": "PTV56"}
TARGET_NAME = "PTV1"
TARGET_GY = 70.0
CORD_NAME = "Cord"
FINE_NAME = "Larynx"
BODY_NAME = "BODY"
BODY_MARGIN = 2  # voxels of BODY past the CT on each side
DOSE_MARGIN = (6, 6, 4)  # voxels of CT left out of the dose grid on each side


@dataclass
class RtStudy:
    """The nodes of a loaded plan and the phantom they were made from (dose in Gy there)."""

    ct: object
    segmentation: object
    dose: object
    study: int
    case: Case


def _padded(mask: Volume, margin: int) -> Volume:
    """The mask on a grid ``margin`` voxels larger on every side, edge voxels repeated outward."""
    array = np.pad(mask.array, margin, mode="edge")
    origin = mask.index_to_lps @ np.append([-margin] * 3, 1.0)
    return Volume(array, mask.spacing, tuple(origin[:3]), mask.direction)


def _finer(mask: Volume, factor: int = 2) -> Volume:
    """The mask's bounding box on a grid ``factor`` times finer (nearest neighbour), voxel centres inside the
    coarse voxels: a structure rasterised finer than the CT, as SlicerRT's oversampled labelmaps are."""
    from DoseSegLib.core.volume import mask_box

    box = crop_box(mask, mask_box(mask.array))
    array = box.array
    for axis in range(3):
        array = np.repeat(array, factor, axis=axis)
    spacing = np.asarray(box.spacing) / factor
    origin = np.asarray(box.origin) - box.direction @ (spacing * (factor - 1) / 2)
    return Volume(array, tuple(spacing), tuple(origin), box.direction)


def _cordSurface(ct: Volume, mask: Volume) -> vtk.vtkPolyData:
    """A closed cylinder (RAS) through the cord's centre line, reaching 15 mm past the CT's first and last slice."""
    ijk = np.argwhere(mask.array).mean(axis=0)
    centre = (mask.index_to_lps @ np.append(ijk, 1.0))[:3]
    zs = [(ct.index_to_lps @ np.array([0, 0, k, 1.0]))[2] for k in (0, ct.shape[2] - 1)]
    length = abs(zs[1] - zs[0]) + 30.0
    cylinder = vtk.vtkCylinderSource()
    cylinder.SetRadius(5.0)
    cylinder.SetHeight(length)
    cylinder.SetResolution(24)
    cylinder.CappingOn()
    transform = vtk.vtkTransform()
    transform.Translate(-centre[0], -centre[1], (zs[0] + zs[1]) / 2)  # LPS -> RAS
    transform.RotateX(90.0)  # the cylinder's axis from y to z
    place = vtk.vtkTransformPolyDataFilter()
    place.SetInputConnection(cylinder.GetOutputPort())
    place.SetTransform(transform)
    clean = vtk.vtkTriangleFilter()
    clean.SetInputConnection(place.GetOutputPort())
    clean.Update()
    surface = vtk.vtkPolyData()
    surface.DeepCopy(clean.GetOutput())
    return surface


def _addClosedSurface(segmentationNode, name: str, surface: vtk.vtkPolyData) -> str:
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.SetColor(0.9, 0.8, 0.2)
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName(), surface)
    segmentation = segmentationNode.GetSegmentation()
    segmentation.AddSegment(segment)
    return segmentation.GetSegmentIdBySegmentName(name)


def _keepOnlySurfaces(segmentationNode) -> None:
    """Make closed surfaces the segmentation's source representation and drop every labelmap."""
    surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    segmentation = segmentationNode.GetSegmentation()
    segmentation.SetConversionParameter("Smoothing factor", "0")  # small organs keep their volume
    segmentationNode.CreateClosedSurfaceRepresentation()
    segmentation.SetSourceRepresentationName(surface)
    segmentation.RemoveRepresentation(labelmap)


def buildRtStudy(scene, case: Case | None = None, doseUnit: str = "CGY", surfacesOnly: bool = False) -> RtStudy:
    """Add a plan to ``scene`` as SlicerRT's DICOM-RT import leaves it (see the module's docstring).

    Args:
        scene: the MRML scene (the segmentation converter rules must be registered).
        case: the patient (DoseSegLib's phantom when None); its dose is in Gy.
        doseUnit: CGY (the dose's voxels times 100) or GY.
        surfacesOnly: every segment a closed surface only (the source representation of an RTSTRUCT import);
            labelmaps are then made on demand on the CT's geometry, grown to hold each surface.
    """
    case = case or make_phantom()
    if case.dose is None or case.possible_dose_mask is None:
        raise ValueError(f"{case.name}: the plan needs a dose and a body (possible-dose) mask")
    ct = nodes.addVolumeNode(scene, case.ct, "CT_1 planning CT")
    segmentationNode = nodes.newSegmentationNode(scene, "RTSTRUCT: structure set", ct)
    masks = {VENDOR_NAMES[name]: mask for name, mask in case.structures.items() if name in VENDOR_NAMES}
    masks[BODY_NAME] = _padded(case.possible_dose_mask, BODY_MARGIN)
    masks[FINE_NAME] = _finer(case.structures["Larynx"])
    nodes.addSegments(segmentationNode, masks)
    # a closed surface added after the labelmaps: converted on the reference geometry, grown to hold it
    segmentationNode.GetSegmentation().SetConversionParameter("Collapse labelmaps", "0")
    if surfacesOnly:
        _keepOnlySurfaces(segmentationNode)
    _addClosedSurface(segmentationNode, CORD_NAME, _cordSurface(case.ct, case.structures["SpinalCord"]))
    box = tuple(slice(m, n - m) for m, n in zip(DOSE_MARGIN, case.dose.shape, strict=True))
    dose = crop_box(case.dose, box)
    factor = {"CGY": 100.0, "GY": 1.0}[doseUnit]
    doseNode = nodes.addVolumeNode(scene, dose.with_array((dose.array * factor).astype(np.float32)), "RTDOSE")
    doseNode.SetAttribute(nodes.DOSE_ATTRIBUTE, "1")
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), "Anonymous^Patient")
    study = shNode.CreateStudyItem(patient, "Planning study")
    shNode.SetItemAttribute(study, "DicomRtImport.DoseUnitName", doseUnit)
    shNode.SetItemAttribute(study, "DicomRtImport.DoseUnitValue", f"{1e-3 * factor:g}")
    hierarchy.placeUnder(shNode, study, ct, segmentationNode, doseNode)
    return RtStudy(ct, segmentationNode, doseNode, study, case)
