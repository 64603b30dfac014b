"""The DoseSeg module's scene layer against a real MRML scene (PyPI slicer-core): nodes, DVH, tables, jobs.

Synthetic tests use DoseSegLib's phantom and always run; the real-patient test uses
OpenKBP pt_201 and is skipped when the data is absent. The reference dose stands in
for the predicted one: these tests check the scene code, not the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from mrml_helpers import column, ijk_to_ras, table_rows

pytest_plugins = ["mrml_fixtures"]  # its fixtures: scene, phantom, loaded, fake_cli; it puts DoseSeg/ on sys.path

from DoseSegLogicLib import nodes, results
from DoseSegLogicLib.pipeline import (
    AUTO_SEGMENTED_TAG,
    CONSTRAINTS_TABLE_NAME,
    METRICS_TABLE_NAME,
    DoseSegJobError,
    DoseSegPipeline,
)
from DoseSegLogicLib.options import PatientOptions

from DoseSegLib import Volume
from DoseSegLib.analysis.constraints import load_constraints
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.alignment import align_case, body_mask
from DoseSegLib.core.colors import structure_color
from DoseSegLib.io.patient import read_patient, write_segmentation, write_volume
from DoseSegLib.io.phantom import make_phantom

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotated_volume() -> Volume:
    angle = np.deg2rad(20)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    return Volume(array, (1.5, 2.0, 3.0), (-10.0, 20.0, 5.0), direction)


# -- geometry ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("volume", [make_phantom(shape=(20, 16, 12)).ct, _rotated_volume()], ids=["axial", "oblique"])
def test_volume_node_geometry_and_kji_round_trip(scene, volume):
    node = nodes.addVolumeNode(scene, volume, "volume")
    assert np.allclose(ijk_to_ras(node), LPS_TO_RAS @ volume.index_to_lps)
    assert np.allclose(node.GetSpacing(), volume.spacing)
    assert np.allclose(node.GetOrigin(), LPS_TO_RAS[:3, :3] @ np.asarray(volume.origin))
    assert node.GetImageData().GetDimensions() == volume.shape
    assert np.array_equal(slicer.util.arrayFromVolume(node), volume.array.transpose(2, 1, 0))
    back = nodes.volumeFromNode(node)
    assert back.same_grid(volume) and back.array.dtype == volume.array.dtype
    assert np.array_equal(back.array, volume.array)


def test_add_or_update_volume_node_reuses_a_given_node(scene):
    """A reused node keeps its identity, name and display and takes the new voxels and geometry; None makes one."""
    first = nodes.addOrUpdateVolumeNode(scene, None, make_phantom(shape=(20, 16, 12)).ct, "first")
    assert first.GetName() == "first" and first.GetDisplayNode() is not None
    display, rotated = first.GetDisplayNode(), _rotated_volume()
    assert nodes.addOrUpdateVolumeNode(scene, first, rotated, "ignored") is first
    assert first.GetName() == "first" and first.GetDisplayNode() is display
    assert nodes.volumeFromNode(first).same_grid(rotated)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1

def test_segment_round_trip_on_an_oblique_grid(scene):
    grid = _rotated_volume()
    mask = grid.with_array(grid.array % 3 == 0)
    segmentation = nodes.newSegmentationNode(scene, "oblique", nodes.addVolumeNode(scene, grid, "grid"))
    nodes.addSegments(segmentation, {"Larynx": mask})
    for reference in (grid, None):
        back = nodes.segmentMasks(segmentation, reference)["Larynx"]
        assert back.same_grid(grid) and np.array_equal(back.array, mask.array)


def test_linear_parent_transform_is_part_of_the_geometry(scene, phantom):
    node = nodes.addVolumeNode(scene, phantom.ct, "CT")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)  # 10 mm towards the patient's right (RAS x)
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = nodes.volumeFromNode(node)
    assert np.allclose(np.asarray(moved.origin) - phantom.ct.origin, (-10.0, 0.0, 0.0))


def test_non_linear_transform_must_be_hardened(scene, phantom):
    node = nodes.addVolumeNode(scene, phantom.ct, "CT")
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    transform.SetAndObserveTransformToParent(vtk.vtkThinPlateSplineTransform())
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(Exception, match="harden"):
        nodes.volumeFromNode(node)


# -- segments ------------------------------------------------------------------------------------------------------


def test_segments_keep_names_colours_and_overlaps(scene, phantom, loaded):
    ct, _, segmentation = loaded
    colors = nodes.segmentColors(segmentation)
    assert list(colors) == list(phantom.structures)
    for name, color in colors.items():
        assert np.allclose(color, structure_color(name))
    overlapping = {"Body": phantom.possible_dose_mask, "PTV70": phantom.structures["PTV70"]}
    nodes.addSegments(nodes.newSegmentationNode(scene, "overlap", ct), overlapping)
    masks = nodes.segmentMasks(scene.GetFirstNode("overlap", "vtkMRMLSegmentationNode"), phantom.ct)
    for name, mask in {**phantom.structures, **overlapping}.items():
        source = masks[name] if name in overlapping else nodes.segmentMasks(segmentation, phantom.ct)[name]
        assert source.same_grid(phantom.ct) and np.array_equal(source.array, mask.array), name


def test_a_segment_named_with_a_newline_is_read_under_its_printable_name(loaded, caplog):
    """A segment named 'Ring<newline>Opt' in Python (the Segment Editor cannot type one): the scene's case names it
    Ring_Opt, as every file reader would, with a warning (see test_control_names.py)."""
    from DoseSegLogicLib.evaluation import sceneCase

    ct, dose, segmentation = loaded
    segments = segmentation.GetSegmentation()
    segments.GetSegment(segments.GetSegmentIdBySegmentName("Larynx")).SetName("Ring\nOpt")
    case = sceneCase(dose, segmentation, PatientOptions(), ct)
    assert "Ring_Opt" in case.structures and case.original_names["Ring_Opt"] == "Ring_Opt"
    assert "'Ring\\nOpt' has control characters" in caplog.text and "read as 'Ring_Opt'" in caplog.text


def test_segments_resample_onto_another_grid(scene, phantom, loaded):
    _, _, segmentation = loaded
    coarse = Volume(np.zeros((32, 32, 24)), tuple(2 * s for s in phantom.ct.spacing),
                    tuple(o + s / 2 for o, s in zip(phantom.ct.origin, phantom.ct.spacing)))
    masks = nodes.segmentMasks(segmentation, coarse)
    expected = phantom.structures["PTV56"].array.reshape(32, 2, 32, 2, 24, 2).mean(axis=(1, 3, 5))
    assert masks["PTV56"].same_grid(coarse)
    assert abs(int(masks["PTV56"].array.sum()) - expected.sum()) < 0.2 * expected.sum()


# -- results -------------------------------------------------------------------------------------------------------


def test_dvh_tables_and_chart_match_the_library(scene, phantom, loaded):
    _, dose, segmentation = loaded
    options = PatientOptions(dvhStep=0.5)
    out = DoseSegPipeline(scene).computeDvh(dose, segmentation, options=options, referenceDoseNode=dose)
    tables, chart = out["dvhTables"], out["dvhChart"]
    expected = evaluate_plan(phantom, step_gy=0.5).dvhs
    assert len(tables) == 2 * len(expected)
    assert chart.GetName() == results.DVH_CHART_NAME and chart.GetNumberOfPlotSeriesNodes() == len(tables)
    for table in tables[: len(expected)]:
        name = table.GetAttribute("DoseSeg.Structure")
        assert np.allclose(column(table, "Dose"), expected[name].dose_gy)
        assert np.allclose(column(table, "Volume"), expected[name].volume_pct)
        assert np.allclose(column(table, "VolumeCc"), expected[name].volume_cc)
        assert table.GetColumnUnitLabel("Dose") == "Gy"
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(index)
        name = series.GetTableNode().GetAttribute("DoseSeg.Structure")
        assert np.allclose(series.GetColor(), structure_color(name))
        assert (series.GetLineStyle() == series.LineStyleDash) == ("reference" in series.GetName())
    again = DoseSegPipeline(scene).computeDvh(dose, segmentation)["dvhTables"]
    assert [t.GetID() for t in again] == [t.GetID() for t in tables[: len(expected)]], "reruns reuse nodes"


def test_metrics_and_constraint_tables(scene, phantom, loaded):
    _, dose, segmentation = loaded
    out = DoseSegPipeline(scene).computeDvh(dose, segmentation)
    metrics, constraints = out["metrics"], out["constraints"]
    assert (metrics.GetName(), constraints.GetName()) == (METRICS_TABLE_NAME, CONSTRAINTS_TABLE_NAME)
    rows = {row["structure"]: row for row in table_rows(metrics)}
    expected = evaluate_plan(phantom).metrics
    assert set(rows) == set(phantom.structures)
    for row in expected:
        for key in ("Mean[Gy]", "D95%[Gy]", "D0.1cc[Gy]", "Volume[cc]"):
            assert rows[row["structure"]][key] == pytest.approx(row[key], rel=1e-6)
    assert rows["PTV70"]["HI"] == pytest.approx(next(r for r in expected if r["structure"] == "PTV70")["HI"])
    checks = table_rows(constraints)
    assert len(checks) >= len(load_constraints())
    assert {row["result"] for row in checks} <= {"pass", "fail", "not evaluated"}


def test_csv_results_become_tables(scene, tmp_path):
    (tmp_path / "radiomics.csv").write_text("structure,original_firstorder_Mean,note\nPTV70,41.5,x\nLarynx,,y\n")
    table = results.loadCsvTable(scene, tmp_path / "radiomics.csv", "radiomics")
    assert table.GetTable().GetColumnByName("original_firstorder_Mean").IsA("vtkDoubleArray")
    assert table.GetTable().GetColumnByName("note").IsA("vtkStringArray")
    assert column(table, "original_firstorder_Mean")[0] == 41.5
    assert np.isnan(column(table, "original_firstorder_Mean")[1])


def test_dose_display_follows_slicerrt(scene, loaded):
    ct, dose, _ = loaded
    nodes.showDose(dose, ct, prescription=70.0, opacity=0.4)
    display = dose.GetDisplayNode()
    assert dose.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert display.GetColorNode().GetName() == "Dose_ColorTable"
    assert not display.GetAutoWindowLevel() and display.GetWindowLevelMin() == 0.0
    assert display.GetWindowLevelMax() >= 70.0
    assert display.GetApplyThreshold() and 0.0 < display.GetLowerThreshold() < 10.0
    found = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    composites = [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())]
    assert len(composites) == 3
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == ct.GetID()
        assert composite.GetForegroundVolumeID() == dose.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    DoseSegPipeline(scene).setDoseOpacity(0.8)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for c in composites)
    nodes.showDose(dose, ct)
    assert scene.GetNodesByClassByName("vtkMRMLColorTableNode", "Dose_ColorTable").GetNumberOfItems() == 1


def test_opacity_only_touches_views_showing_the_dose(scene, loaded):
    ct, dose, _ = loaded
    nodes.showDose(dose, ct, opacity=0.5)
    other = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # a view showing something else over the CT
    other.SetBackgroundVolumeID(ct.GetID())
    other.SetForegroundVolumeID(ct.GetID())
    other.SetForegroundOpacity(0.3)
    empty = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # a view with no foreground
    empty.SetForegroundOpacity(0.1)
    logic = DoseSegPipeline(scene)
    logic.setDoseOpacity(0.9, dose)
    logic.setDoseOpacity(0.7)  # any RT dose
    found = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    composites = [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())]
    showing = [c for c in composites if c.GetForegroundVolumeID() == dose.GetID()]
    assert len(showing) == 3 and all(c.GetForegroundOpacity() == pytest.approx(0.7) for c in showing)
    assert other.GetForegroundOpacity() == pytest.approx(0.3) and empty.GetForegroundOpacity() == pytest.approx(0.1)
    second = nodes.addVolumeNode(scene, nodes.volumeFromNode(dose), "second dose")
    other.SetForegroundVolumeID(second.GetID())
    logic.setDoseOpacity(0.2, dose)
    assert other.GetForegroundOpacity() == pytest.approx(0.3), "a view showing another volume keeps its opacity"
    assert all(c.GetForegroundOpacity() == pytest.approx(0.2) for c in showing)


def test_cli_outputs_load_as_dose_and_missing_oars(scene, phantom, loaded, tmp_path):
    ct, _, segmentation = loaded
    write_volume(tmp_path / "dose.nrrd", phantom.dose)
    oars = {name: phantom.structures[name] for name in ("Brainstem", "SpinalCord", "Larynx")}
    write_segmentation(tmp_path / "segmentation.seg.nrrd", oars)
    pipeline = DoseSegPipeline(scene)
    doseNode = pipeline.loadDose(tmp_path / "dose.nrrd", ct, prescription=70.0)
    assert doseNode.GetName() == "CT predicted dose" and doseNode.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert np.allclose(ijk_to_ras(doseNode), ijk_to_ras(ct))
    segments = segmentation.GetSegmentation()
    segments.RemoveSegment(segments.GetSegmentIdBySegmentName("Larynx"))
    pipeline.addMissingSegments(tmp_path / "segmentation.seg.nrrd", ct, segmentation)
    added = segments.GetSegment(segments.GetSegmentIdBySegmentName("Larynx"))
    tag = vtk.reference("")
    assert added.GetTag(AUTO_SEGMENTED_TAG, tag) and tag.get() == "1"
    assert np.allclose(added.GetColor(), structure_color("Larynx"))
    assert segments.GetNumberOfSegments() == len(phantom.structures)
    fresh = pipeline.addMissingSegments(tmp_path / "segmentation.seg.nrrd", ct)
    assert fresh.GetSegmentation().GetNumberOfSegments() == len(oars)


# -- background jobs (the real DoseSegLib command line) ---------------------------------------------------------


def test_align_job_runs_the_cli_and_loads_its_output(scene, phantom, loaded):
    ct, _, segmentation = loaded
    job = DoseSegPipeline(scene).startAlignStructures(ct, segmentation)
    aligned = job.wait(interval=0.05)
    assert job.done and not job.folder.exists(), "the temporary folder is removed"
    assert aligned.GetName() == "Structures on CT grid"
    masks = nodes.segmentMasks(aligned, phantom.ct)
    assert {name: int(m.array.sum()) for name, m in masks.items()} == {
        name: int(m.array.sum()) for name, m in phantom.structures.items()}


def test_failed_job_reports_the_cli_error(scene, loaded):
    ct, _, segmentation = loaded
    job = DoseSegPipeline(scene).startPredictDose(ct, segmentation, PatientOptions(namesFile="/no/such/names.json"))
    with pytest.raises(DoseSegJobError, match=r"names\.json: cannot read name mapping") as failure:
        job.wait(interval=0.05)
    assert "names.json" in failure.value.log
    assert not job.folder.exists()


def test_cancelled_job_loads_nothing(scene, loaded):
    ct, _, segmentation = loaded
    before = scene.GetNumberOfNodes()
    job = DoseSegPipeline(scene).startAlignStructures(ct, segmentation)
    job.cancel()
    assert job.wait(interval=0.05) is None and job.cancelled
    assert scene.GetNumberOfNodes() == before


# -- real patient --------------------------------------------------------------------------------------------------


def test_real_patient_nodes_dvh_and_metrics(scene, shared_data, tmp_path):
    folder = shared_data / "openkbp" / "validation" / "pt_201"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    raw = read_patient(folder)
    case = align_case(raw)
    ct = nodes.addVolumeNode(scene, case.ct, "pt_201 CT")
    write_volume(tmp_path / "dose.nrrd", case.dose)  # the reference dose stands in for a prediction
    pipeline = DoseSegPipeline(scene)
    dose = pipeline.loadDose(tmp_path / "dose.nrrd", ct)
    assert np.allclose(ijk_to_ras(dose), ijk_to_ras(ct))
    assert np.allclose(dose.GetSpacing(), ct.GetSpacing()) and np.allclose(dose.GetOrigin(), ct.GetOrigin())
    assert dose.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions() == case.ct.shape
    assert np.array_equal(slicer.util.arrayFromVolume(dose), case.dose.array.transpose(2, 1, 0))
    assert np.array_equal(slicer.util.arrayFromVolume(ct), case.ct.array.transpose(2, 1, 0))

    segmentation = nodes.newSegmentationNode(scene, "pt_201 structures", ct)
    nodes.addSegments(segmentation, raw.structures)  # cropped boxes: the scene resamples them
    masks = nodes.segmentMasks(segmentation, case.ct)
    for name, mask in case.structures.items():
        assert np.array_equal(masks[name].array, mask.array), name
        assert np.allclose(nodes.segmentColors(segmentation)[name], structure_color(name))

    out = pipeline.computeDvh(dose, segmentation)
    tables, chart = out["dvhTables"], out["dvhChart"]
    expected = evaluate_plan(case).dvhs
    assert chart.GetNumberOfPlotSeriesNodes() == len(tables) == len(expected) == 10
    for table in tables:
        dvh = expected[table.GetAttribute("DoseSeg.Structure")]
        assert np.allclose(column(table, "Dose"), dvh.dose_gy)
        assert np.allclose(column(table, "Volume"), dvh.volume_pct)

    metrics, constraints = out["metrics"], out["constraints"]
    rows = {row["structure"]: row for row in table_rows(metrics)}
    for row in evaluate_plan(case).metrics:
        assert rows[row["structure"]]["Max[Gy]"] == pytest.approx(row["Max[Gy]"], rel=1e-6)
        assert rows[row["structure"]]["D95%[Gy]"] == pytest.approx(row["D95%[Gy]"], rel=1e-6)
    assert "PTV70" in {row["structure"] for row in table_rows(constraints)}


@pytest.mark.slow
def test_real_patient_model_steps_through_the_real_command_line(scene, shared_data):
    """predictDose and extractRadiomics run the real DoseSegLib command line (bundled dose model,
    pyradiomics) on pt_201 in a background process and load its outputs onto the CT's grid."""
    pytest.importorskip("radiomics")
    folder = shared_data / "openkbp" / "validation" / "pt_201"
    case = align_case(read_patient(folder))
    ct = nodes.addVolumeNode(scene, case.ct, "pt_201 CT")
    segmentation = nodes.newSegmentationNode(scene, "pt_201 structures", ct)
    nodes.addSegments(segmentation, case.structures)
    logic = DoseSegPipeline(scene)

    dose = logic.predictDose(ct, segmentation, PatientOptions(device="cpu"))
    assert dose.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert np.allclose(ijk_to_ras(dose), ijk_to_ras(ct))
    predicted = slicer.util.arrayFromVolume(dose).transpose(2, 1, 0)
    assert predicted.shape == case.ct.shape and predicted.min() >= 0
    body = body_mask(case.ct).array  # the scene has no possible-dose mask: the CLI derives the body
    assert np.all(predicted[~body] == 0) and predicted[body].max() > 60
    inside = case.possible_dose_mask.array
    assert np.abs(predicted - case.dose.array)[inside].mean() < 6.0, "the bundled model is far off on pt_201"

    radiomics = logic.extractRadiomics(ct, segmentation)
    rows = {row["structure"]: row for row in table_rows(radiomics)}
    assert set(rows) == set(case.structures)
    assert rows["PTV70"]["original_shape_VoxelVolume"] == pytest.approx(
        case.structures["PTV70"].array.sum() * case.ct.voxel_volume_cc * 1000, rel=1e-6)
