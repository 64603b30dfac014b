"""Subject hierarchy: DoseSeg's results under the CT's study, as SlicerRT's DICOM-RT import places a plan's series.

The dose and segmentation go beside the CT (children of its study, or of the scene when the
CT did not come from DICOM); tables, the DVH chart and isodose models go in folders there.
"""

from __future__ import annotations

import slicer

RESULTS_FOLDER = "DoseSeg results"
ISODOSE_FOLDER = "DoseSeg isodose lines"


def _itemOf(shNode, dataNode, parent: int) -> int:
    item = shNode.GetItemByDataNode(dataNode)
    return item if item else shNode.CreateItem(parent, dataNode)


def placeUnder(shNode, parent: int, *dataNodes) -> None:
    """Put the nodes (None is skipped) under the subject-hierarchy item ``parent`` (an item is made when missing)."""
    for node in filter(None, dataNodes):
        shNode.SetItemParent(_itemOf(shNode, node, parent), parent)


def studyItem(ctNode) -> int:
    """The subject-hierarchy item holding the CT: its study when loaded from DICOM, else the scene."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctNode.GetScene())
    return shNode.GetItemParent(_itemOf(shNode, ctNode, shNode.GetSceneItemID()))


def placeBesideCt(ctNode, *dataNodes) -> None:
    """Put the nodes (None is skipped) under the CT's study."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctNode.GetScene())
    placeUnder(shNode, studyItem(ctNode), *dataNodes)


def placeInFolder(ctNode, folderName: str, *dataNodes) -> int:
    """Put the nodes (None is skipped) in the folder ``folderName`` under the CT's study (made once); its item."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctNode.GetScene())
    parent = studyItem(ctNode)
    folder = shNode.GetItemChildWithName(parent, folderName) or shNode.CreateFolderItem(parent, folderName)
    placeUnder(shNode, folder, *dataNodes)
    return folder
