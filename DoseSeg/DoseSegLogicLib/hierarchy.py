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


def ctParentItem(ctNode) -> int:
    """The subject-hierarchy item holding the CT: its study when loaded from DICOM, else the scene (the CT gets an
    item under the scene when it has none)."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctNode.GetScene())
    return shNode.GetItemParent(_itemOf(shNode, ctNode, shNode.GetSceneItemID()))


def studyAncestorItem(node) -> int:
    """The study item above ``node`` in the subject hierarchy, 0 when it is in no study."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    item = shNode.GetItemByDataNode(node)
    return shNode.GetItemAncestorAtLevel(item, "Study") if item else 0


def placeBesideCt(ctNode, *dataNodes) -> None:
    """Put the nodes (None is skipped) under the CT's study."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctNode.GetScene())
    placeUnder(shNode, ctParentItem(ctNode), *dataNodes)


def placeInFolder(ctNode, folderName: str, *dataNodes) -> int:
    """Put the nodes (None is skipped) in the folder ``folderName`` under the CT's study (made once); its item."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ctNode.GetScene())
    parent = ctParentItem(ctNode)
    folder = shNode.GetItemChildWithName(parent, folderName) or shNode.CreateFolderItem(parent, folderName)
    placeUnder(shNode, folder, *dataNodes)
    return folder
