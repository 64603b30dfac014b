"""The What-if mode's scene side against a real MRML scene (PyPI slicer-core) and a real worker process:
a modified segment leads to an updated dose node, DVH curves (the previous ones dashed) and tables."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from mrml_helpers import table_rows
from scipy import ndimage

pytest_plugins = ["mrml_fixtures"]

from DoseSegLogicLib import nodes
from DoseSegLogicLib.pipeline import METRICS_TABLE_NAME
from DoseSegLogicLib.whatif import WhatIfLogic


def _metric(scene, structure: str, name: str) -> float:
    table = scene.GetFirstNode(METRICS_TABLE_NAME, "vtkMRMLTableNode")
    return float(next(row for row in table_rows(table) if row["structure"] == structure)[name])


def test_modified_segment_updates_dose_dvh_and_tables(scene, loaded, phantom, monkeypatch, torch_in_workers) -> None:
    ct, _, segmentation = loaded
    logic = WhatIfLogic(ct, segmentation, debounceSeconds=0.1, device="cpu")
    try:
        logic.waitForUpdate()
        first = nodes.volumeFromNode(logic.doseNode).array.copy()
        volume_before = _metric(scene, "PTV70", "Volume[cc]")
        grown = phantom.ct.with_array(ndimage.binary_dilation(phantom.structures["PTV70"].array, iterations=2))
        segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("PTV70")
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            nodes._orientedImage(grown), segmentation, segment_id,
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
        assert logic.due is not None  # the segmentation's modified event was seen
        assert logic.edited == {segment_id}, "the event names the edited segment"
        extracted = []
        extract = nodes.segmentMasks
        monkeypatch.setattr(nodes, "segmentMasks", lambda node, grid, ids=None: extracted.append(ids) or extract(
            node, grid, ids))
        logic.waitForUpdate()
        assert extracted == [[segment_id]], "an edit extracts the edited segment only, not every segment"
        second = nodes.volumeFromNode(logic.doseNode).array
        assert not np.allclose(first, second, atol=0.05)
        assert _metric(scene, "PTV70", "Volume[cc]") == pytest.approx(grown.array.sum() * phantom.ct.voxel_volume_cc,
                                                                     rel=1e-3)
        assert _metric(scene, "PTV70", "Volume[cc]") > volume_before
        previous = scene.GetFirstNode("DVH previous PTV70", "vtkMRMLPlotSeriesNode")
        assert previous is not None and previous.GetLineStyle() == previous.LineStyleDash
        assert scene.GetFirstNode("DVH PTV70", "vtkMRMLPlotSeriesNode").GetLineStyle() == previous.LineStyleSolid
        assert logic.doseNode.GetAttribute("DicomRtImport.DoseVolume") == "1"
    finally:
        logic.close()
    assert logic.worker.process.poll() is not None
