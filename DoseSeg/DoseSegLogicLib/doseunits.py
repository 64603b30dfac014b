"""Dose units the SlicerRT way: ``DicomRtImport.DoseUnitName``/``DoseUnitValue`` on the study item.

SlicerRT's DICOM-RT import loads an RTDOSE with its voxels already multiplied by the Dose
Grid Scaling, so they are in the unit named by ``DoseUnitName`` (GY or CGY); it writes that
name, and the scaling as ``DoseUnitValue``, on the subject-hierarchy study holding the dose,
and its DVH and Isodose modules read them there. DoseSeg reads the unit from the study (the
node's own attributes, then Gy, when the study has none) and works in Gy; a dose it writes
into a study keeps the study's unit.
"""

from __future__ import annotations

import slicer

from DoseSegLib import Volume
from DoseSegLib.core.errors import DoseSegError

from . import nodes
from .hierarchy import studyAncestorItem

DOSE_UNIT_NAME_ATTRIBUTE = "DicomRtImport.DoseUnitName"
DOSE_UNIT_VALUE_ATTRIBUTE = "DicomRtImport.DoseUnitValue"
GY_PER_UNIT = {"GY": 1.0, "CGY": 0.01}


def _shNode(node):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())


def doseUnit(doseNode) -> str:
    """The unit of the dose node's voxels: its study's DoseUnitName, else the node's, else GY."""
    study = studyAncestorItem(doseNode)
    unit = _shNode(doseNode).GetItemAttribute(study, DOSE_UNIT_NAME_ATTRIBUTE) if study else ""
    unit = (unit or doseNode.GetAttribute(DOSE_UNIT_NAME_ATTRIBUTE) or "GY").strip().upper()
    if unit not in GY_PER_UNIT:
        raise DoseSegError(f"'{doseNode.GetName()}': dose unit '{unit}' is neither GY nor CGY")
    return unit


def gyPerUnit(doseNode) -> float:
    """Gy per unit of the dose node's voxels (0.01 for a study in CGY)."""
    return GY_PER_UNIT[doseUnit(doseNode)]


def doseVolume(doseNode) -> Volume:
    """The dose node as a Volume in Gy (a CGY study's voxels divided by 100)."""
    volume = nodes.volumeFromNode(doseNode)
    factor = gyPerUnit(doseNode)
    return volume if factor == 1.0 else volume.with_array(volume.array.astype("float32") * factor)


def studyDoseUnit(node) -> str:
    """The dose unit of the study holding ``node`` (GY when it is in no study or its study names none)."""
    study = studyAncestorItem(node)
    unit = (_shNode(node).GetItemAttribute(study, DOSE_UNIT_NAME_ATTRIBUTE) if study else "") or "GY"
    unit = unit.strip().upper()
    if unit not in GY_PER_UNIT:
        raise DoseSegError(f"the study of '{node.GetName()}' has dose unit '{unit}', neither GY nor CGY")
    return unit


def markDoseInStudy(doseNode) -> str:
    """Mark ``doseNode`` an RT dose whose unit is its study's (Gy, written on the study, when it has none).

    Returns:
        The unit of the node's voxels: the caller fills it in that unit (see :data:`GY_PER_UNIT`).
    """
    shNode = _shNode(doseNode)
    study = studyAncestorItem(doseNode)
    unit = studyDoseUnit(doseNode)
    if study and not shNode.GetItemAttribute(study, DOSE_UNIT_NAME_ATTRIBUTE):
        shNode.SetItemAttribute(study, DOSE_UNIT_NAME_ATTRIBUTE, unit)
        shNode.SetItemAttribute(study, DOSE_UNIT_VALUE_ATTRIBUTE, "1.0")
    value = (shNode.GetItemAttribute(study, DOSE_UNIT_VALUE_ATTRIBUTE) if study else "") or "1.0"
    doseNode.SetAttribute(nodes.DOSE_ATTRIBUTE, "1")
    doseNode.SetAttribute(DOSE_UNIT_NAME_ATTRIBUTE, unit)  # also on the node, for a dose moved out of its study
    doseNode.SetAttribute(DOSE_UNIT_VALUE_ATTRIBUTE, value)
    return unit
