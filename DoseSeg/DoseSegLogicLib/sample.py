"""The module's sample data: DoseSegLib's synthetic head-and-neck phantom, generated locally (nothing downloaded).

Loaded the way SlicerRT's DICOM-RT import leaves a plan: a patient and study in the subject
hierarchy holding the CT, the structures and the reference dose (an RT dose in Gy), so a new
user can click through every button of the module in a minute.
"""

from __future__ import annotations

import slicer

from DoseSegLib.io.phantom import make_phantom

from . import doseunits, hierarchy, nodes

SAMPLE_NAME = "DoseSegPhantom"
PATIENT_NAME = "DoseSeg phantom"


def loadPhantom(scene) -> tuple:
    """Add the phantom's CT, structures and reference dose to ``scene``; returns (ct, segmentation, dose) nodes."""
    case = make_phantom()
    ct = nodes.addVolumeNode(scene, case.ct, "Phantom CT")
    segmentation = nodes.newSegmentationNode(scene, "Phantom structures", ct)
    nodes.addSegments(segmentation, case.structures)
    dose = nodes.addVolumeNode(scene, case.dose, "Phantom reference dose")
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), PATIENT_NAME)
    study = shNode.CreateStudyItem(patient, "Synthetic planning study")
    hierarchy.placeUnder(shNode, study, ct, segmentation, dose)
    doseunits.markDoseInStudy(dose)  # Gy, written on the study item as SlicerRT's import does
    return ct, segmentation, dose
