"""What the panel pre-selects from a scene: the CT (never a dose), the dose volumes, and the prescriptions a
loaded RTPLAN (or an earlier run on the same study) gives."""

from __future__ import annotations

import contextlib

import slicer

from DoseSegLib.core.errors import DoseSegError

from . import hierarchy, nodes
from .options import formatPrescriptions, parsePrescriptions

PRESCRIPTIONS_ATTRIBUTE = "DoseSeg.Prescriptions"  # on the study item: the prescriptions last used there
RTPLAN_CLASS = "vtkMRMLRTPlanNode"  # SlicerRT's plan node (prescription dose, target segment)


def _volumes(scene) -> list:
    found = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    found.UnRegister(scene)  # the wrapper already holds the returned collection
    volumes = [found.GetItemAsObject(index) for index in range(found.GetNumberOfItems())]
    return [volume for volume in volumes if not volume.IsA("vtkMRMLLabelMapVolumeNode")]


def isDose(volumeNode) -> bool:
    """True for an RT dose volume (SlicerRT's ``DicomRtImport.DoseVolume`` attribute)."""
    return volumeNode.GetAttribute(nodes.DOSE_ATTRIBUTE) == "1"


def firstCtVolume(scene):
    """The first scalar volume that is neither an RT dose nor a labelmap (the planning CT), or None."""
    return next((volume for volume in _volumes(scene) if not isDose(volume)), None)


def doseVolumes(scene) -> list:
    """The scene's RT dose volumes."""
    return [volume for volume in _volumes(scene) if isDose(volume)]


def _rtPlans(scene) -> list:
    found = scene.GetNodesByClass(RTPLAN_CLASS)
    found.UnRegister(scene)
    return [found.GetItemAsObject(index) for index in range(found.GetNumberOfItems())]


def planPrescription(planNode) -> tuple[str, float] | None:
    """(target segment name, Gy) of a SlicerRT plan node, None when it states no target or no dose."""
    dose = float(planNode.GetPrescriptionDose() or 0.0)
    segmentation = planNode.GetSegmentationNode()
    segmentId = planNode.GetTargetSegmentID()
    if dose <= 0 or segmentation is None or not segmentId:
        return None
    segment = segmentation.GetSegmentation().GetSegment(segmentId)
    return (segment.GetName(), dose) if segment is not None else None


def knownPrescriptions(scene, segmentationNode=None, plans: list | None = None) -> dict[str, float]:
    """Target name -> Gy from the scene's RTPLAN nodes, then from the prescriptions last used on the study of
    ``segmentationNode`` (see :func:`rememberPrescriptions`); {} when neither states any.

    Args:
        plans: the plan nodes (SlicerRT's ``vtkMRMLRTPlanNode``); the scene's when None.
    """
    prescriptions = {}
    for plan in _rtPlans(scene) if plans is None else plans:
        found = planPrescription(plan)
        if found is not None:
            prescriptions[found[0]] = found[1]
    if segmentationNode is not None:
        study = hierarchy.studyAncestorItem(segmentationNode)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        text = shNode.GetItemAttribute(study, PRESCRIPTIONS_ATTRIBUTE) if study else ""
        with contextlib.suppress(DoseSegError):  # an unreadable note is no prescription
            prescriptions = {**parsePrescriptions(text or ""), **prescriptions}
    return prescriptions


def rememberPrescriptions(segmentationNode, prescriptions: dict[str, float]) -> None:
    """Note the prescriptions on the study of ``segmentationNode`` (saved with the scene), for the next session."""
    study = hierarchy.studyAncestorItem(segmentationNode)
    if study and prescriptions:
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(segmentationNode.GetScene())
        shNode.SetItemAttribute(study, PRESCRIPTIONS_ATTRIBUTE, formatPrescriptions(prescriptions))
