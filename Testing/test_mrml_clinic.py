"""The clinic path on a real MRML scene (PyPI slicer-core): a plan loaded as SlicerRT's DICOM-RT import leaves it,
through the DVH, the dose units, the DVH tables and the console API.

The scene (DoseSegTestLib.rtscene, fixture ``rt_study``): segments on their own extents (BODY past
the CT, a closed-surface cord past the last slice, a larynx finer than the CT), an RTDOSE smaller
than the CT whose study is in CGY, the TPS target name PTV1. The real Eclipse prostate case runs
when ../shared/data (or DOSESEG_SHARED_DATA) holds it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import slicer
from conftest import SHARED_DATA
from mrml_helpers import column, table_rows

pytest_plugins = ["mrml_fixtures"]  # its fixtures: scene, rt_study, ...; it puts DoseSeg/ on sys.path

from DoseSegLogicLib import dependencies, doseunits, hierarchy, isodose, nodes, results
from DoseSegLogicLib.evaluation import referenceVolumeNode
from DoseSegLogicLib.options import PatientOptions
from DoseSegLogicLib import pipeline as pipeline_module
from DoseSegLogicLib.pipeline import DoseSegJobError, DoseSegPipeline
from DoseSegTestLib import rtscene

from DoseSegLib import DoseSegError, Volume
from DoseSegLib.cli.main import main
from DoseSegLib.core.alignment import resample_mask
from DoseSegLib.io.patient import read_dose, read_mask, read_volume, write_dose, write_structures, write_volume
from DoseSegLib.io.tables import read_csv

ECLIPSE = Path(os.environ.get("DOSESEG_SHARED_DATA", SHARED_DATA)) / "slicerrt-eclipse-prostate"
TOLERANCE_GY = 0.1


def _sh(scene):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _doseseg_dvh(tmp_path: Path, ct: Volume, dose: Volume, masks: dict[str, Volume], *options: str) -> list[dict]:
    """``doseseg dvh`` on a patient folder holding these contours (each on its own grid): its dvh_metrics.csv."""
    patient = tmp_path / "patient"
    patient.mkdir()
    write_volume(patient / "ct.nrrd", ct)
    write_dose(patient / "dose.nrrd", dose)
    write_structures(patient / "structures", masks)
    assert main(["dvh", str(patient), "-o", str(tmp_path / "dvh"), *options]) == 0
    return read_csv(tmp_path / "dvh" / "dvh_metrics.csv")


def _worst_differences(scene_rows: list[dict], cli_rows: list[dict]) -> dict[str, float]:
    """max |scene - doseseg dvh| of every numeric metric column over the structures (both tables the same rows)."""
    scene_by_name = {row["structure"]: row for row in scene_rows}
    assert set(scene_by_name) == {row["structure"] for row in cli_rows}
    worst: dict[str, float] = {}
    for row in cli_rows:
        for key, value in row.items():
            if key.endswith("[Gy]") and value not in (None, ""):
                difference = abs(float(value) - float(scene_by_name[row["structure"]][key]))
                worst[key] = max(worst.get(key, 0.0), difference)
    return worst


# -- the scene as SlicerRT leaves it ---------------------------------------------------------------------------------


def test_fixture_is_a_slicerrt_import(rt_study):
    ct = nodes.volumeFromNode(rt_study.ct)
    masks = nodes.segmentMasks(rt_study.segmentation)
    body, cord = masks[rtscene.BODY_NAME], masks[rtscene.CORD_NAME]
    ct_top = (ct.index_to_lps @ [0, 0, ct.shape[2] - 1, 1])[2]
    assert body.origin[2] < ct.origin[2] and (body.index_to_lps @ [0, 0, body.shape[2] - 1, 1])[2] > ct_top
    assert (cord.index_to_lps @ [0, 0, cord.shape[2] - 1, 1])[2] > ct_top, "the cord reaches past the last slice"
    assert masks[rtscene.FINE_NAME].voxel_volume_cc < ct.voxel_volume_cc
    dose = nodes.volumeFromNode(rt_study.dose)
    assert all(d < c for d, c in zip(dose.shape, ct.shape, strict=True)), "the RTDOSE is smaller than the CT"
    assert rt_study.dose.GetAttribute("DicomRtImport.DoseUnitName") is None, "the unit is on the study only"
    assert _sh(rt_study.ct.GetScene()).GetItemAttribute(rt_study.study, "DicomRtImport.DoseUnitName") == "CGY"
    assert hierarchy.studyAncestorItem(rt_study.dose) == rt_study.study
    assert referenceVolumeNode(rt_study.segmentation) is rt_study.ct


def test_study_ancestor_and_ct_parent_items_differ_outside_a_study(rt_study):
    """Two lookups that once shared the name ``studyItem``: the study above a node (0 outside any study), and the
    item results are put beside (the CT's study, else the scene item)."""
    assert hierarchy.studyAncestorItem(rt_study.ct) == hierarchy.ctParentItem(rt_study.ct) == rt_study.study
    scene = rt_study.ct.GetScene()
    loose = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT outside any study")
    assert hierarchy.studyAncestorItem(loose) == 0
    assert hierarchy.ctParentItem(loose) == _sh(scene).GetSceneItemID()


@pytest.mark.parametrize("grid", ["ct", "dose", "oblique"])
def test_segments_go_onto_any_grid_by_physical_position(rt_study, grid, caplog):
    """Segments past the target grid are clipped, never forced onto it: each mask equals DoseSegLib's physical
    resampling of the segment's own labelmap (the bug was a padded array forced onto the grid's shape)."""
    ct = nodes.volumeFromNode(rt_study.ct)
    target = {"ct": ct, "dose": nodes.volumeFromNode(rt_study.dose)}.get(grid)
    if target is None:
        angle = np.deg2rad(15)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        target = Volume(np.zeros((50, 50, 30)), (4.0, 4.0, 3.0), ct.origin, rotation)
    own = nodes.segmentMasks(rt_study.segmentation)
    with caplog.at_level(logging.WARNING):
        masks = nodes.segmentMasks(rt_study.segmentation, target)
    assert set(masks) == set(own)
    for name, mask in masks.items():
        assert mask.same_grid(target), name
        assert np.array_equal(mask.array, resample_mask(own[name], target).array), name
    assert "BODY" in caplog.text and "clipped" in caplog.text


def test_a_segment_that_misses_the_grid_is_left_out_with_a_warning(rt_study, caplog):
    ct = nodes.volumeFromNode(rt_study.ct)
    far = Volume(np.ones((4, 4, 4), bool), ct.spacing, tuple(np.asarray(ct.origin) - 500.0))
    nodes.addSegments(rt_study.segmentation, {"Couch": far})
    with caplog.at_level(logging.WARNING):
        masks = nodes.segmentMasks(rt_study.segmentation, ct)
    assert "Couch" not in masks and "Couch" in caplog.text
    out = DoseSegPipeline(rt_study.ct.GetScene()).computeDvh(rt_study.dose, rt_study.segmentation, {"PTV1": 70})
    assert "Couch" not in {row["structure"] for row in table_rows(out["metrics"])}


# -- Compute DVH: the library's numbers ------------------------------------------------------------------------------


def test_surface_only_segments_become_masks_past_the_ct(scene):
    """An RTSTRUCT import whose every segment is a closed surface: labelmaps on the CT geometry, grown."""
    rt = rtscene.buildRtStudy(scene, surfacesOnly=True)
    segmentation = rt.segmentation.GetSegmentation()
    assert segmentation.GetSourceRepresentationName() == "Closed surface"
    assert not segmentation.ContainsRepresentation("Binary labelmap")
    ct = nodes.volumeFromNode(rt.ct)
    masks = nodes.segmentMasks(rt.segmentation)
    assert len(masks) == segmentation.GetNumberOfSegments()
    cord = masks[rtscene.CORD_NAME]
    assert (cord.index_to_lps @ [0, 0, cord.shape[2] - 1, 1])[2] > (ct.index_to_lps @ [0, 0, ct.shape[2] - 1, 1])[2]
    out = DoseSegPipeline(scene).computeDvh(rt.dose, rt.segmentation, {"PTV1": 70.0})
    assert len(out["dvhTables"]) == len(masks)


@pytest.mark.parametrize("surfaces_only", [False, True], ids=["labelmaps", "closed-surfaces"])
def test_scene_dvh_equals_doseseg_dvh_on_the_same_contours(scene, surfaces_only, tmp_path):
    rt_study = rtscene.buildRtStudy(scene, surfacesOnly=surfaces_only)
    out = DoseSegPipeline(scene).computeDvh(rt_study.dose, rt_study.segmentation, prescriptions={"PTV1": 70.0})
    rows = table_rows(out["metrics"])
    dose_gy = doseunits.doseVolume(rt_study.dose)
    cli = _doseseg_dvh(tmp_path, nodes.volumeFromNode(rt_study.ct), dose_gy,
                       nodes.segmentMasks(rt_study.segmentation), "--prescription", "PTV1=70")
    worst = _worst_differences(rows, cli)
    assert len(worst) >= 12 and max(worst.values()) < TOLERANCE_GY, worst
    assert list(cli[0]) == [out["metrics"].GetTable().GetColumn(i).GetName()
                            for i in range(out["metrics"].GetNumberOfColumns())], "the columns of dvh_metrics.csv"
    by_name = {row["structure"]: row for row in rows}
    assert by_name["PTV1"]["prescription_gy"] == 70.0 and by_name["PTV1"]["original_name"] == "PTV1"
    if not surfaces_only:  # closed surfaces become labelmaps on the CT's grid
        assert "structure grid" in by_name["Larynx"]["dvh_method"], "the finer larynx keeps its own grid"
    assert by_name["Brainstem"]["original_name"] == "BRSTEM"


def test_a_cgy_study_is_read_in_gy(rt_study):
    scene = rt_study.ct.GetScene()
    out = DoseSegPipeline(scene).computeDvh(rt_study.dose, rt_study.segmentation, {"PTV1": 70.0})
    ptv = next(row for row in table_rows(out["metrics"]) if row["structure"] == "PTV1")
    truth = rt_study.case.dose.array[rt_study.case.structures["PTV70"].array].mean()
    assert ptv["Mean[Gy]"] == pytest.approx(truth, abs=0.5), "cGy voxels read as Gy would give ~7000"
    shNode = _sh(scene)
    shNode.SetItemAttribute(rt_study.study, "DicomRtImport.DoseUnitName", "GY")  # the same voxels said to be Gy
    with pytest.raises(DoseSegError, match="is it in cGy"):
        DoseSegPipeline(scene).computeDvh(rt_study.dose, rt_study.segmentation, {"PTV1": 70.0})


def test_dvh_tables_are_listed_as_slicerrt_dvh_tables(rt_study):
    """SlicerRT's DVH module and DVH Comparison find DVH tables by the attribute DoseVolumeHistogram.DVH and
    read the dose volume, segmentation and metrics table from their references."""
    scene = rt_study.ct.GetScene()
    out = DoseSegPipeline(scene).computeDvh(rt_study.dose, rt_study.segmentation, {"PTV1": 70.0})
    found = scene.GetNodesByClass("vtkMRMLTableNode")
    listed = [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())
              if found.GetItemAsObject(i).GetAttribute(results.SLICERRT_DVH_ATTRIBUTE) == "1"]
    assert {t.GetID() for t in listed} == {t.GetID() for t in out["dvhTables"]}
    volumes = {row["structure"]: row["Volume[cc]"] for row in table_rows(out["metrics"])}
    segmentation = rt_study.segmentation.GetSegmentation()
    for table in listed:
        assert table.GetNodeReference("doseVolumeRef") is rt_study.dose
        assert table.GetNodeReference("segmentationRef") is rt_study.segmentation
        assert table.GetNodeReference("dvhMetricsTableRef") is out["metrics"]
        segment = segmentation.GetSegment(table.GetAttribute("DoseVolumeHistogram.SegmentID"))
        assert segment is not None and segment.GetName() in {"BRSTEM", "PTV1", "Cord", "BODY"} | set(
            rtscene.VENDOR_NAMES.values()) | {rtscene.FINE_NAME}
        name = table.GetAttribute("DoseSeg.Structure")
        assert float(table.GetAttribute("DoseVolumeHistogram.Volume (cc)")) == pytest.approx(volumes[name], rel=1e-4)
        assert column(table, "Dose")[0] == 0.0 and column(table, "Volume")[0] == pytest.approx(100.0)


# -- dose units on the study -----------------------------------------------------------------------------------------


def test_a_dose_loaded_into_a_cgy_study_keeps_the_studys_unit(rt_study, tmp_path):
    scene = rt_study.ct.GetScene()
    gy = doseunits.doseVolume(rt_study.dose)
    write_dose(tmp_path / "dose.nrrd", gy)
    loaded = DoseSegPipeline(scene).loadDose(tmp_path / "dose.nrrd", rt_study.ct, prescription=70.0)
    assert hierarchy.studyAncestorItem(loaded) == rt_study.study
    assert _sh(scene).GetItemAttribute(rt_study.study, "DicomRtImport.DoseUnitName") == "CGY", "left as it was"
    assert loaded.GetAttribute("DicomRtImport.DoseUnitName") == "CGY"
    assert np.allclose(nodes.volumeFromNode(loaded).array, gy.array * 100, rtol=1e-5)
    assert np.allclose(doseunits.doseVolume(loaded).array, gy.array, atol=1e-4)
    assert loaded.GetDisplayNode().GetWindowLevelMax() >= 7000.0, "colour window in the study's unit"


def test_a_study_without_a_unit_gets_gy_on_the_study_item(scene, tmp_path):
    rt = rtscene.buildRtStudy(scene, doseUnit="GY")
    _sh(scene).RemoveItemAttribute(rt.study, "DicomRtImport.DoseUnitName")
    write_dose(tmp_path / "dose.nrrd", doseunits.doseVolume(rt.dose))
    DoseSegPipeline(scene).loadDose(tmp_path / "dose.nrrd", rt.ct)
    assert _sh(scene).GetItemAttribute(rt.study, "DicomRtImport.DoseUnitName") == "GY"


def test_isodose_levels_are_percentages_of_the_prescription(rt_study):
    scene = rt_study.ct.GetScene()
    pipeline = DoseSegPipeline(scene)
    with pytest.raises(DoseSegError, match="percentages of the prescription"):
        pipeline.showIsodose(rt_study.dose)
    models = pipeline.showIsodose(rt_study.dose, prescription=60.0)
    assert models
    for model in models:
        level_gy = float(model.GetAttribute(isodose.ISODOSE_ATTRIBUTE))
        assert model.GetName() == f"Isodose {round(100 * level_gy / 60.0)}%"
        points = slicer.util.arrayFromModelPoints(model)
        assert len(points) > 20
    ninety_five = next(m for m in models if m.GetName() == "Isodose 95%")
    assert float(ninety_five.GetAttribute(isodose.ISODOSE_ATTRIBUTE)) == pytest.approx(57.0)  # not 95 % of the max


# -- the real Eclipse prostate case --------------------------------------------------------------------------------


@pytest.fixture
def eclipse_scene(scene):
    if not ECLIPSE.is_dir():
        pytest.skip(f"the Eclipse prostate case is not at {ECLIPSE} (only present on development machines)")
    ct = nodes.addVolumeNode(scene, read_volume(ECLIPSE / "ct.nrrd"), "CT")
    segmentation = nodes.newSegmentationNode(scene, "RTSTRUCT", ct)
    files = sorted((ECLIPSE / "structures").glob("*.nrrd"))
    structures = {file.name[: -len(".nrrd")]: read_mask(file) for file in files}
    nodes.addSegments(segmentation, structures)  # each on its own (finer) grid, as the contours were rasterised
    dose = nodes.addVolumeNode(scene, read_dose(ECLIPSE / "dose.nrrd"), "RTDOSE")
    dose.SetAttribute(nodes.DOSE_ATTRIBUTE, "1")
    shNode = _sh(scene)
    study = shNode.CreateStudyItem(shNode.CreateSubjectItem(shNode.GetSceneItemID(), "EclipseProstate"), "Plan")
    shNode.SetItemAttribute(study, "DicomRtImport.DoseUnitName", "GY")
    for node in (ct, segmentation, dose):
        shNode.CreateItem(study, node)
    return ct, segmentation, dose


def test_eclipse_prostate_scene_dvh_equals_doseseg_dvh(eclipse_scene, tmp_path, capsys):
    _, segmentation, dose = eclipse_scene
    out = DoseSegPipeline(dose.GetScene()).computeDvh(dose, segmentation)
    assert main(["dvh", str(ECLIPSE), "-o", str(tmp_path / "dvh")]) == 0
    worst = _worst_differences(table_rows(out["metrics"]), read_csv(tmp_path / "dvh" / "dvh_metrics.csv"))
    with capsys.disabled():
        print("\nEclipse prostate, scene vs doseseg dvh, max |diff| Gy:",
              ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    assert len(worst) >= 12 and max(worst.values()) < TOLERANCE_GY, worst
    assert len(out["dvhTables"]) == 6


# -- the console API with the real command line (tiny models) ------------------------------------------------------


@pytest.fixture
def tiny_models(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from DoseSegTestLib.tinymodels import writeTinyCatalogue

    monkeypatch.setenv("DOSESEG_MODELS", str(writeTinyCatalogue(tmp_path / "models")))


def test_run_all_without_the_targets_prescription_fails_with_the_log_and_no_temp_folder(rt_study, tiny_models):
    with pytest.raises(DoseSegJobError) as failure:
        DoseSegPipeline(rt_study.ct.GetScene()).runAll(rt_study.ct, rt_study.segmentation, radiomics=False)
    message = str(failure.value)
    assert "PTV1" in message and "--prescription" in message, message
    assert "DoseSeg-" not in message and "/tmp" not in message, "the headline names no temporary folder"
    assert "PTV1" in failure.value.log


@pytest.mark.slow
def test_run_all_on_a_slicerrt_plan(rt_study, tiny_models, tmp_path):
    scene = rt_study.ct.GetScene()
    out = DoseSegPipeline(scene).runAll(rt_study.ct, rt_study.segmentation, referenceDose=rt_study.dose,
                                        prescriptions={"PTV1": 70.0}, radiomics=False,
                                        outputFolder=tmp_path / "run")
    assert {"dose", "metrics", "dvhTables", "constraints"} <= set(out)
    dose = out["dose"]
    assert hierarchy.studyAncestorItem(dose) == rt_study.study
    assert _sh(scene).GetItemAttribute(rt_study.study, "DicomRtImport.DoseUnitName") == "CGY"
    predicted = read_volume(tmp_path / "run" / "dose.nrrd")
    assert np.allclose(doseunits.doseVolume(dose).array, predicted.array, atol=1e-3)
    structures = {row["structure"] for row in table_rows(out["metrics"])}
    assert {"PTV1", "Brainstem", "Body", "SpinalCord", "Larynx"} <= structures
    assert all(table.GetAttribute("DoseVolumeHistogram.DVH") == "1" for table in out["dvhTables"]
               if "reference" not in table.GetName())
    assert out["constraints"].GetNumberOfRows() > 0
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert "PTV1" in summary
    assert out["comparison"] is not None, "the TPS dose was compared with"


@pytest.mark.slow
def test_the_model_buttons_on_a_slicerrt_plan(rt_study, tiny_models):
    scene = rt_study.ct.GetScene()
    pipeline = DoseSegPipeline(scene)
    aligned = pipeline.alignStructures(rt_study.ct, rt_study.segmentation)
    assert aligned.GetSegmentation().GetNumberOfSegments() == rt_study.segmentation.GetSegmentation(
    ).GetNumberOfSegments()
    for name, mask in nodes.segmentMasks(aligned).items():
        assert mask.spacing == pytest.approx(nodes.volumeFromNode(rt_study.ct).spacing), name
    predicted = pipeline.predictDose(rt_study.ct, rt_study.segmentation, PatientOptions(prescriptions={"PTV1": 70}))
    assert hierarchy.studyAncestorItem(predicted) == rt_study.study and doseunits.doseUnit(predicted) == "CGY"
    if dependencies.radiomicsProblem() is None:
        table = pipeline.extractRadiomics(rt_study.ct, rt_study.segmentation)
        assert table.GetNumberOfRows() == rt_study.segmentation.GetSegmentation().GetNumberOfSegments()


def test_compute_dvh_in_a_background_process_gives_the_same_tables(rt_study, monkeypatch):
    """A clinical-size grid is evaluated by `doseseg dvh` in a background process: same numbers and nodes."""
    scene = rt_study.ct.GetScene()
    logic = DoseSegPipeline(scene)
    in_process = table_rows(logic.computeDvh(rt_study.dose, rt_study.segmentation, {"PTV1": 70.0})["metrics"])
    monkeypatch.setattr(pipeline_module, "IN_PROCESS_VOXELS", 0)  # as if the CT were clinical size
    out = logic.computeDvh(rt_study.dose, rt_study.segmentation, {"PTV1": 70.0}, referenceDoseNode=rt_study.dose)
    worst = _worst_differences(table_rows(out["metrics"]), in_process)
    assert max(worst.values()) < 1e-3, worst
    dashed = [t for t in out["dvhTables"] if t.GetName().startswith("DVH reference ")]
    assert len(dashed) == len(in_process) == len(out["dvhTables"]) - len(dashed)
    for table in out["dvhTables"]:
        assert table.GetAttribute("DoseVolumeHistogram.DVH") == "1"
        assert table.GetAttribute("DoseVolumeHistogram.SegmentID"), table.GetName()
        assert table.GetNodeReference("doseVolumeRef") is rt_study.dose
