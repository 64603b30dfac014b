"""SlicerRT interplay on a real MRML scene (PyPI slicer-core): dose units, subject hierarchy under the CT's
study, isodose models, comparison outputs and standard terminology of auto-segmented structures."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from mrml_helpers import REPO, table_rows

pytest_plugins = ["mrml_fixtures"]  # its fixtures: scene, phantom, loaded, fake_cli; it puts DoseSeg/ on sys.path

from DoseSegLogicLib import hierarchy, isodose, nodes, sample, terminology
from DoseSegLogicLib.pipeline import AUTO_SEGMENTED_TAG, DoseSegPipeline
from scipy import ndimage

from DoseSegLib import OARS
from DoseSegLib.io.patient import read_volume, write_segmentation, write_volume
from DoseSegLib.io.tables import read_csv


def _sh(scene):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _ct_in_a_dicom_study(scene, ct) -> int:
    """The CT placed as SlicerRT's DICOM import leaves it: patient > study > CT series. Returns the study."""
    sh = _sh(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1"), "Planning CT study")
    sh.CreateItem(study, ct)
    return study


def _parent(scene, node) -> int:
    sh = _sh(scene)
    return sh.GetItemParent(sh.GetItemByDataNode(node))


def test_loaded_dose_has_slicerrt_units_and_sits_in_the_cts_study(scene, phantom, loaded, tmp_path):
    ct, _, _ = loaded
    study = _ct_in_a_dicom_study(scene, ct)
    write_volume(tmp_path / "dose.nrrd", phantom.dose)
    dose = DoseSegPipeline(scene).loadDose(tmp_path / "dose.nrrd", ct)
    assert dose.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert dose.GetAttribute("DicomRtImport.DoseUnitName") == "GY"
    assert dose.GetAttribute("DicomRtImport.DoseUnitValue") == "1.0"
    assert _parent(scene, dose) == study
    sh = _sh(scene)  # SlicerRT reads the unit from the study item
    assert sh.GetItemAttribute(study, "DicomRtImport.DoseUnitName") == "GY"
    assert sh.GetItemAttribute(study, "DicomRtImport.DoseUnitValue") == "1.0"


def test_run_all_results_go_under_the_study_once(scene, phantom, loaded, fake_cli):
    ct, reference, segmentation = loaded
    study = _ct_in_a_dicom_study(scene, ct)
    logic = DoseSegPipeline(scene)
    outputs = logic.runAll(ct, segmentation, reference)
    sh = _sh(scene)
    folder = sh.GetItemChildWithName(study, hierarchy.RESULTS_FOLDER)
    assert folder and sh.GetItemParent(folder) == study
    assert _parent(scene, outputs["dose"]) == study
    for key in ("dvhChart", "metrics", "constraints", "radiomics", "comparison", "doseDifference"):
        assert _parent(scene, outputs[key]) == folder, key
    assert all(_parent(scene, table) == folder for table in outputs["dvhTables"])
    children = vtk.vtkIdList()
    sh.GetItemChildren(study, children)
    again = logic.runAll(ct, segmentation, reference, doseNode=outputs["dose"])
    after = vtk.vtkIdList()
    sh.GetItemChildren(study, after)
    assert after.GetNumberOfIds() == children.GetNumberOfIds(), "a second Run all adds no folder or item"
    assert _parent(scene, again["metrics"]) == folder


def test_without_dicom_the_results_sit_beside_the_ct_in_the_scene(scene, loaded, fake_cli):
    ct, reference, segmentation = loaded
    outputs = DoseSegPipeline(scene).runAll(ct, segmentation, reference)
    sh = _sh(scene)
    assert _parent(scene, outputs["dose"]) == sh.GetSceneItemID() == _parent(scene, ct)
    assert sh.GetItemParent(sh.GetItemChildWithName(sh.GetSceneItemID(), hierarchy.RESULTS_FOLDER)) == \
        sh.GetSceneItemID()


def test_comparison_outputs_are_loaded_when_there_is_a_reference(scene, loaded, fake_cli, tmp_path):
    ct, reference, segmentation = loaded
    outputs = DoseSegPipeline(scene).runAll(ct, segmentation, reference, outputFolder=tmp_path / "run")
    difference = outputs["doseDifference"]
    expected = read_volume(tmp_path / "run" / "dose_difference.nrrd")
    assert difference.GetName() == "CT dose difference"
    assert np.allclose(nodes.volumeFromNode(difference).array, expected.array)
    assert nodes.volumeFromNode(difference).same_grid(nodes.volumeFromNode(ct))
    assert difference.GetAttribute("DicomRtImport.DoseUnitName") == "GY"
    assert difference.GetAttribute("DicomRtImport.DoseVolume") is None, "a difference is not a dose"
    rows = table_rows(outputs["comparison"])
    assert [(r["structure"], r["metric"]) for r in rows] == [
        (r["structure"], r["metric"]) for r in read_csv(tmp_path / "run" / "comparison.csv")]


def test_without_a_reference_there_is_no_comparison(scene, loaded, fake_cli, tmp_path):
    ct, _, segmentation = loaded
    ready = next(tmp_path.glob("ready"))
    for name in ("dose_difference.nrrd", "comparison.csv", "dvh_reference.csv"):
        (ready / name).unlink()
    outputs = DoseSegPipeline(scene).runAll(ct, segmentation)
    assert outputs["doseDifference"] is None and outputs["comparison"] is None
    assert not any("reference" in table.GetName() for table in outputs["dvhTables"])


# -- isodose -------------------------------------------------------------------------------------------------------


def _dose_at(dose_node, points_ras: np.ndarray) -> np.ndarray:
    """The dose (trilinear) at RAS points, through the node's own RAS-to-IJK matrix."""
    matrix = vtk.vtkMatrix4x4()
    dose_node.GetRASToIJKMatrix(matrix)
    ras_to_ijk = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk = (ras_to_ijk @ np.c_[points_ras, np.ones(len(points_ras))].T)[:3]
    return ndimage.map_coordinates(slicer.util.arrayFromVolume(dose_node).transpose(2, 1, 0).astype(float), ijk,
                                   order=1)


def test_isodose_models_lie_on_their_dose_level(scene, loaded):
    ct, dose, _ = loaded
    study = _ct_in_a_dicom_study(scene, ct)
    _sh(scene).CreateItem(study, dose)
    logic = DoseSegPipeline(scene)
    maximum = float(dose.GetImageData().GetScalarRange()[1])
    models = logic.showIsodose(dose, prescription=70.0)
    expected = [p for p in isodose.ISODOSE_LEVELS_PERCENT if 0.7 * p < maximum]
    assert [m.GetName() for m in models] == [f"Isodose {p}%" for p in expected]
    for model, percent in zip(models, expected):
        points = slicer.util.arrayFromModelPoints(model)
        assert len(points) > 100, model.GetName()
        level = 0.7 * percent
        assert float(model.GetAttribute(isodose.ISODOSE_ATTRIBUTE)) == pytest.approx(level, rel=1e-3)
        assert np.allclose(_dose_at(dose, points), level, atol=0.01 * level), "surface off its level: geometry"
        display = model.GetDisplayNode()
        assert display.GetVisibility2D() and not display.GetVisibility3D()
    folder = _sh(scene).GetItemChildWithName(study, hierarchy.ISODOSE_FOLDER)
    assert folder and all(_parent(scene, m) == folder for m in models)
    again = logic.showIsodose(dose, prescription=70.0)
    assert [m.GetID() for m in again] == [m.GetID() for m in models], "reruns reuse the models"
    fewer = logic.showIsodose(dose, prescription=maximum / 0.9)  # 95 % and above now exceed the maximum
    assert [m.GetName() for m in fewer] == ["Isodose 30%", "Isodose 50%", "Isodose 80%"]
    assert scene.GetFirstNode("Isodose 100%", "vtkMRMLModelNode") is None, "a level above the maximum is removed"


def test_isodose_follows_an_oblique_dose_grid(scene):
    """A dose on a rotated, anisotropic grid: the isosurface lands where the dose has that level in RAS."""
    angle = np.deg2rad(25)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    i, j, k = np.meshgrid(*(np.arange(n, dtype=float) for n in (30, 24, 20)), indexing="ij")
    array = (60.0 * np.exp(-((i - 15) ** 2 + (j - 12) ** 2 + (k - 10) ** 2) / 60.0)).astype(np.float32)
    from DoseSegLib import Volume

    dose = nodes.addVolumeNode(scene, Volume(array, (1.2, 2.5, 3.0), (-20.0, 15.0, 8.0), direction), "oblique dose")
    models = DoseSegPipeline(scene).showIsodose(dose, prescription=60.0)
    assert models
    for model in models:
        level = float(model.GetAttribute(isodose.ISODOSE_ATTRIBUTE))
        assert np.allclose(_dose_at(dose, slicer.util.arrayFromModelPoints(model)), level, atol=0.02 * level)


# -- terminology ---------------------------------------------------------------------------------------------------


def test_terminology_file_is_what_slicer_reads_and_covers_every_oar():
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    context = logic.LoadTerminologyFromFile(str(terminology.TERMINOLOGY_FILE))
    assert context == "DoseSeg head and neck organs at risk"
    entries = terminology.terminologyEntries()
    assert set(entries) == set(OARS)
    for name in OARS:
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.FindTypeInTerminologyBy3dSlicerLabel(context, name, entry), name
        assert logic.SerializeTerminologyEntry(entry) == entries[name], name
    assert "SCT^45289007^Parotid gland~SCT^24028007^Right" in entries["RightParotid"]
    assert "SCT^45289007^Parotid gland~SCT^7771000^Left" in entries["LeftParotid"]
    assert "SCT^2748008^Spinal cord~^^" in entries["SpinalCord"]


def test_auto_segmented_structures_carry_their_terminology(scene, phantom, loaded, tmp_path):
    ct, _, segmentation = loaded
    segments = segmentation.GetSegmentation()
    for name in ("Larynx", "LeftParotid"):
        segments.RemoveSegment(segments.GetSegmentIdBySegmentName(name))
    before = {segments.GetNthSegment(i).GetName(): segments.GetNthSegment(i).GetTerminology()
              for i in range(segments.GetNumberOfSegments())}
    write_segmentation(tmp_path / "auto.seg.nrrd", {name: phantom.structures[name] for name in OARS})
    DoseSegPipeline(scene).addMissingSegments(tmp_path / "auto.seg.nrrd", ct, segmentation)
    entries = terminology.terminologyEntries()
    for name in ("Larynx", "LeftParotid"):
        segment = segments.GetSegment(segments.GetSegmentIdBySegmentName(name))
        tag = vtk.reference("")
        assert segment.GetTag(AUTO_SEGMENTED_TAG, tag) and segment.GetTerminology() == entries[name]
    for name, entry in before.items():
        assert segments.GetSegment(segments.GetSegmentIdBySegmentName(name)).GetTerminology() == entry, \
            "the user's own segments keep theirs"


def test_terminology_resource_is_installed_with_the_module():
    cmake = (REPO / "DoseSeg" / "CMakeLists.txt").read_text()
    assert "Resources/Terminology/${MODULE_NAME}.term.json" in cmake
    assert terminology.TERMINOLOGY_FILE == REPO / "DoseSeg" / "Resources" / "Terminology" / "DoseSeg.term.json"


# -- sample data ---------------------------------------------------------------------------------------------------


def test_sample_phantom_loads_as_a_dicom_rt_study_and_runs_all(scene, phantom, fake_cli):
    ct, segmentation, dose = sample.loadPhantom(scene)
    sh = _sh(scene)
    study = _parent(scene, ct)
    assert sh.GetItemLevel(study) == "Study" and sh.GetItemName(sh.GetItemParent(study)) == sample.PATIENT_NAME
    assert _parent(scene, segmentation) == study == _parent(scene, dose)
    assert np.array_equal(nodes.volumeFromNode(ct).array, phantom.ct.array)
    assert np.array_equal(nodes.volumeFromNode(dose).array, phantom.dose.array)
    assert dose.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert dose.GetAttribute("DicomRtImport.DoseUnitName") == "GY"
    assert sorted(nodes.segmentColors(segmentation)) == sorted(phantom.structures)
    outputs = DoseSegPipeline(scene).runAll(ct, segmentation, dose)
    assert _parent(scene, outputs["dose"]) == study
    assert sh.GetItemParent(_parent(scene, outputs["metrics"])) == study
