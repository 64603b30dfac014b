"""The Sensitivity overlay and the what-if edit flow against a real MRML scene (PyPI slicer-core):
a map in Gy per voxel becomes a Gy-per-cc volume on the CT grid with a diverging colour table, a window
symmetric about zero and a colour legend; edits are debounced into one request; a dead worker is reported."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import slicer
from mrml_helpers import ijk_to_ras
from scipy import ndimage
from vtk.util import numpy_support

pytest_plugins = ["mrml_fixtures"]

from DoseSegLogicLib import nodes, sensitivity
from DoseSegLogicLib.whatif import WhatIfLogic

from DoseSegLib import Volume
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.patient import read_volume


@pytest.fixture
def legend_scene(scene):
    """The scene as Slicer's Colors module leaves it: colour legend display nodes can be made."""
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    return scene


def _signed_map(ct: Volume) -> Volume:
    """A signed map on the CT grid: positive on one side, negative on the other, zero far away."""
    i = np.arange(ct.shape[0], dtype=np.float32)[:, None, None] - ct.shape[0] / 2
    array = np.broadcast_to(i * 1e-4, ct.shape).copy()
    array[:, :, : ct.shape[2] // 4] = 0.0
    return ct.with_array(array)


def test_gy_per_cc_divides_by_the_voxel_volume_of_the_maps_own_grid():
    per_voxel = Volume(np.full((2, 3, 4), 0.003, np.float32), (2.0, 2.5, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    per_cc = sensitivity.gyPerCc(per_voxel)
    assert per_voxel.voxel_volume_cc == pytest.approx(0.015)
    np.testing.assert_allclose(per_cc.array, 0.2, rtol=1e-6)
    assert per_cc.array.dtype == np.float32
    assert (per_cc.spacing, per_cc.origin) == (per_voxel.spacing, per_voxel.origin)


def test_window_is_symmetric_and_not_set_by_one_spike():
    values = np.zeros((10, 10, 11), np.float32)
    values.flat[:1000] = np.linspace(-1.0, 1.0, 1000)
    assert sensitivity.symmetricWindow(values) == pytest.approx(0.995, abs=1e-3)
    values.flat[0] = -500.0  # one spike
    assert sensitivity.symmetricWindow(values) < 1.0
    assert sensitivity.symmetricWindow(np.zeros((3, 3, 3))) == 1e-6
    assert sensitivity.symmetricWindow(np.full((3, 3, 3), 2.0)) == pytest.approx(2.0)


def test_colour_table_diverges_from_a_transparent_zero():
    blue, middle, red = (sensitivity.divergingColor(f) for f in (0.0, 0.5, 1.0))
    assert blue == (0.0, 0.0, 1.0, 1.0) and red == (1.0, 0.0, 0.0, 1.0)
    assert middle[3] == 0.0, "values near zero do not hide the CT"
    edge = sensitivity.TRANSPARENT_FRACTION / 2  # |value| = TRANSPARENT_FRACTION of the half-width
    assert sensitivity.divergingColor(0.5 + 0.99 * edge)[3] == sensitivity.divergingColor(0.5 - 0.99 * edge)[3] == 0
    assert sensitivity.divergingColor(0.5 + 1.01 * edge)[3] == sensitivity.divergingColor(0.5 - 1.01 * edge)[3] == 1
    for f in (0.1, 0.3):  # symmetric: mirrored fractions, mirrored colours
        low, high = sensitivity.divergingColor(f), sensitivity.divergingColor(1 - f)
        assert low[3] == pytest.approx(high[3]) and low[:3] == pytest.approx(high[2::-1])


def test_map_becomes_a_gy_per_cc_overlay_with_colours_window_and_legend(legend_scene, loaded, phantom):
    ct, _, _ = loaded
    per_voxel = _signed_map(phantom.ct)
    node = sensitivity.showSensitivity(legend_scene, per_voxel, "LeftParotid", "Mean[Gy]", "PTV70", ct)
    assert node.GetName() == "Sensitivity Mean[Gy] LeftParotid wrt PTV70"
    np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(ct))
    shown = nodes.volumeFromNode(node)
    voxel_cc = float(np.prod(phantom.ct.spacing)) / 1000
    np.testing.assert_allclose(shown.array, per_voxel.array / voxel_cc, rtol=1e-6)
    assert node.GetAttribute("DoseSeg.Sensitivity.Units") == "Gy per cc of contour change"
    assert node.GetAttribute("DoseSeg.Sensitivity.Wrt") == "PTV70"
    display = node.GetDisplayNode()
    assert display.GetColorNode().GetName() == sensitivity.COLOR_TABLE_NAME
    assert display.GetColorNode().GetNumberOfColors() == sensitivity.COLORS
    low, high = display.GetWindowLevelMin(), display.GetWindowLevelMax()
    assert low == pytest.approx(-high) and high == pytest.approx(sensitivity.symmetricWindow(shown.array))
    assert 0 < high <= np.abs(shown.array).max()
    for composite in nodes.sliceCompositeNodes(legend_scene):
        assert composite.GetForegroundVolumeID() == node.GetID()
        assert composite.GetBackgroundVolumeID() == ct.GetID()
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node)
    assert legend is not None and "Gy per cc of contour change" in legend.GetTitleText()
    assert legend.GetVisibility()

    again = sensitivity.showSensitivity(legend_scene, per_voxel.with_array(-per_voxel.array), "LeftParotid", "D2%[Gy]",
                                        None, ct, node)
    assert again is node and node.GetName() == "Sensitivity D2%[Gy] LeftParotid"
    np.testing.assert_allclose(nodes.volumeFromNode(node).array, -per_voxel.array / voxel_cc, rtol=1e-6)
    assert legend_scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode") == 1
    assert legend_scene.GetNodesByName(sensitivity.COLOR_TABLE_NAME).GetNumberOfItems() == 1


def test_display_pipeline_draws_signs_in_colour_and_zero_transparent(scene):
    """The display node's own RGBA output (what a slice view blends over the CT): Slicer keeps a colour only where
    the table's alpha is not zero, so values near zero must fall on the table's transparent centre."""
    values = np.zeros((8, 4, 2), np.float32)
    values[:, :, 0] = np.linspace(-1.0, 1.0, 8)[:, None] * 0.01  # Gy per voxel
    node = sensitivity.showSensitivity(scene, Volume(values, (2.0, 2.0, 2.5), (0.0, 0.0, 0.0), np.eye(3)), "A", "mean")
    producer = node.GetDisplayNode().GetOutputImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    assert image.GetNumberOfScalarComponents() == 4
    rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(2, 4, 8, 4)[:, 0]  # [k, i, rgba]
    assert (rgba[1, :, 3] == 0).all(), "zero sensitivity leaves the CT visible"
    assert (rgba[0, :, 3] == 255).all()
    negative, positive = rgba[0, :4, :3].astype(int), rgba[0, 4:, :3].astype(int)
    assert (negative[:, 2] > negative[:, 0]).all() and (positive[:, 0] > positive[:, 2]).all(), "blue < 0 < red"
    np.testing.assert_allclose(negative[::-1], positive[:, ::-1], atol=3)  # mirrored colours for mirrored values
    assert tuple(rgba[0, 0, :3]) == (0, 0, 255) and tuple(rgba[0, -1, :3]) == (255, 0, 0)


def test_without_legend_nodes_the_overlay_still_shows(scene, loaded, phantom, caplog):
    """slicer-core's bare scene cannot make legend nodes (Slicer's Colors module registers them)."""
    ct, _, _ = loaded
    with caplog.at_level(logging.WARNING):
        node = sensitivity.showSensitivity(scene, _signed_map(phantom.ct), "PTV70", "Mean[Gy]", ct.GetName(), ct)
    assert "no colour legend" in caplog.text
    assert node.GetDisplayNode().GetColorNode().GetName() == sensitivity.COLOR_TABLE_NAME


def _paint(segmentation, phantom, name: str, iterations: int) -> None:
    grown = phantom.ct.with_array(ndimage.binary_dilation(phantom.structures[name].array, iterations=iterations))
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        nodes._orientedImage(grown), segmentation, segmentation.GetSegmentation().GetSegmentIdBySegmentName(name),
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)


def test_edits_are_debounced_and_the_sensitivity_map_arrives(legend_scene, loaded, phantom, torch_in_workers):
    ct, _, segmentation = loaded
    logic = WhatIfLogic(ct, segmentation, debounceSeconds=0.3, device="cpu")
    sent = []
    send = logic.worker.send
    logic.worker.send = lambda op, **fields: (sent.append((op, fields.get("name"))), send(op, **fields))[1]
    try:
        logic.waitForUpdate()
        assert "PTV70" in logic.structures and logic.latency > 0 and logic.predictSeconds > 0
        assert not logic.busy
        for iterations in (1, 2, 3):  # three strokes, each before the debounce ends
            _paint(segmentation, phantom, "PTV70", iterations)
            assert logic.busy and not logic.poll()
        assert sent == []
        time.sleep(0.35)
        logic.waitForUpdate()
        assert sent == [("set_mask", "PTV70"), ("predict", None)], "one request set for the three strokes"
        segment = segmentation.GetSegmentation().GetSegment(
            segmentation.GetSegmentation().GetSegmentIdBySegmentName("Larynx"))
        segment.SetColor(0.1, 0.9, 0.1)  # a segment modified, no mask changed: nothing to predict
        assert logic.due is not None
        time.sleep(0.35)
        assert not logic.poll() and not logic.busy and len(sent) == 2

        logic.requestSensitivity("LeftParotid", "mean", "PTV70")
        with pytest.raises(DoseSegError, match="already"):
            logic.requestSensitivity("LeftParotid")
        node = logic.waitForSensitivity()
        per_voxel = read_volume(logic.sensitivityFile)
        np.testing.assert_allclose(nodes.volumeFromNode(node).array, per_voxel.array / phantom.ct.voxel_volume_cc,
                                   rtol=1e-5)
        np.testing.assert_allclose(ijk_to_ras(node), ijk_to_ras(ct))
        assert np.abs(per_voxel.array).max() > 0
        assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(node) is not None

        logic.requestSensitivity("NoSuchOrgan")
        with pytest.raises(DoseSegError, match="NoSuchOrgan"):
            logic.waitForSensitivity()
        assert logic.sensitivityNode is node and logic.takeError() and logic.takeError() is None

        logic.worker.process.kill()
        logic.worker.process.wait()
        with pytest.raises(DoseSegError, match="worker process ended"):
            logic.poll()
    finally:
        logic.close()
