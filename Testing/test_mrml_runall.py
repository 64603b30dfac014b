"""Run all on a real MRML scene (PyPI slicer-core): the command line's outputs, loaded as it wrote them.

The command line is a stand-in copying a run folder made by DoseSegLib's own writers
(the models are not under test here; the real command line runs in test_mrml_scene's jobs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mrml_helpers import column, table_rows

pytest_plugins = ["mrml_fixtures"]  # its fixtures: scene, phantom, loaded, fake_cli; it puts DoseSeg/ on sys.path

from DoseSegLogicLib import dependencies, nodes
from DoseSegLogicLib.options import PatientOptions
from DoseSegLogicLib.pipeline import DoseSegPipeline
from DoseSegLogicLib.process import cliEnvironment
from DoseSegLogicLib.results import readDvhCsv

from DoseSegLib import DoseSegError
from DoseSegLib.io.tables import read_csv


def test_model_steps_wire_the_cli_and_load_its_outputs(scene, phantom, loaded, fake_cli):
    ct, reference, segmentation = loaded
    logic = DoseSegPipeline(scene)
    dose = logic.predictDose(ct, segmentation, PatientOptions(device="cpu", prescriptions={"PTV70": 70.0}))
    assert dose.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert np.allclose(nodes.volumeFromNode(dose).array, phantom.dose.array * 0.9)
    call = fake_cli()[-1]
    assert call["args"][0] == "predict-dose" and call["args"][2:6] == ["--prescription", "PTV70=70", "--device", "cpu"]
    assert {"ct.nrrd", "structures/PTV70.nrrd", "structures/Larynx.nrrd"} <= set(call["inputs"])

    segments = segmentation.GetSegmentation()
    segments.RemoveSegment(segments.GetSegmentIdBySegmentName("Mandible"))
    assert logic.segmentMissingOars(ct, segmentation) is segmentation
    assert segments.GetSegmentIdBySegmentName("Mandible") and segments.GetNumberOfSegments() == len(phantom.structures)
    assert fake_cli()[-1]["args"][0] == "segment" and "--tta" not in fake_cli()[-1]["args"]
    logic.segmentMissingOars(ct, segmentation, PatientOptions(mirrorAveraging=True))
    assert fake_cli()[-1]["args"][0] == "segment" and "--tta" in fake_cli()[-1]["args"]

    outputs = logic.runAll(ct, segmentation, reference, options=PatientOptions(device="cuda", mirrorAveraging=True))
    assert set(outputs) == {"dose", "segmentation", "dvhTables", "dvhChart", "metrics", "constraints", "radiomics",
                            "comparison", "doseDifference", "planQa", "messages", "folder"}
    assert outputs["metrics"].GetNumberOfRows() == len(phantom.structures)
    assert outputs["radiomics"].GetNumberOfRows() == 1 and outputs["folder"] is None
    call = fake_cli()[-1]
    assert call["args"][0] == "run" and "cuda" in call["args"] and "dose.nrrd" in call["inputs"]
    assert "--tta" in call["args"]


def test_the_dose_shown_follows_the_primary_target_prescription_not_a_higher_boost(scene, phantom, loaded, fake_cli):
    """GTV 74 Gy inside PTV70: the colours and the isodose 100 % are the PTV's 70 Gy, as the run's report."""
    from DoseSegLogicLib.pipeline import mainPrescription

    ct, _, segmentation = loaded
    options = PatientOptions(device="cpu", prescriptions={"GTV": 74.0, "PTV70": 70.0})
    assert mainPrescription(options) == 70.0
    dose = DoseSegPipeline(scene).predictDose(ct, segmentation, options)
    assert dose.GetDisplayNode().GetLowerThreshold() == pytest.approx(nodes.LOWER_THRESHOLD_FRACTION * 70.0)


def _csv_cells(path: Path) -> list[dict[str, object]]:
    """A CSV's rows with numbers as floats, as a table node holds them."""
    def cell(text: str):
        try:
            return float(text)
        except ValueError:
            return text
    return [{key: cell(value) for key, value in row.items()} for row in read_csv(path)]


def _same_rows(table_rows, file_rows) -> bool:
    def same(a, b):
        return (a == b or (isinstance(a, float) and isinstance(b, float) and (np.isclose(a, b)
                or (np.isnan(a) and np.isnan(b)))) or (b == "" and isinstance(a, float) and np.isnan(a)))
    return len(table_rows) == len(file_rows) and all(
        row.keys() == expected.keys() and all(same(row[k], expected[k]) for k in row)
        for row, expected in zip(table_rows, file_rows))


def test_run_all_loads_the_tables_the_command_wrote(scene, phantom, loaded, fake_cli, tmp_path):
    """The DVH, metric and goal tables of Run all are the files `doseseg run` wrote (its report's numbers),
    not an in-process recomputation with the module's defaults."""
    ct, reference, segmentation = loaded
    kept = tmp_path / "kept run"
    outputs = DoseSegPipeline(scene).runAll(ct, segmentation, reference, outputFolder=kept)
    assert outputs["folder"] == kept and (kept / "dvh_metrics.csv").is_file(), "the output folder is kept"
    assert _same_rows(table_rows(outputs["metrics"]), _csv_cells(kept / "dvh_metrics.csv"))
    assert _same_rows(table_rows(outputs["constraints"]), _csv_cells(kept / "constraints.csv"))
    goals = table_rows(outputs["constraints"])
    assert [(g["structure"], g["metric"], g["limit"]) for g in goals] == [("Larynx", "Mean[Gy]", 12.0)]
    assert _same_rows(table_rows(outputs["comparison"]), _csv_cells(kept / "comparison.csv"))

    expected = {**{(name, ""): dvh for name, dvh in readDvhCsv(kept / "dvh.csv").items()},
                **{(name, "reference "): dvh for name, dvh in readDvhCsv(kept / "dvh_reference.csv").items()}}
    assert len(outputs["dvhTables"]) == len(expected) == 2 * len(phantom.structures)
    for table in outputs["dvhTables"]:
        name = table.GetAttribute("DoseSeg.Structure")
        dvh = expected[(name, "reference " if "reference" in table.GetName() else "")]
        assert np.allclose(column(table, "Dose"), dvh.dose_gy) and np.allclose(column(table, "Volume"), dvh.volume_pct)
        assert np.allclose(np.diff(column(table, "Dose")), 0.5), "the command's DVH step, not the module's 0.1 Gy"
    chart = outputs["dvhChart"]
    assert chart.GetNumberOfPlotSeriesNodes() == len(expected)
    colors = nodes.segmentColors(segmentation)
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(index)
        assert np.allclose(series.GetColor(), colors[series.GetTableNode().GetAttribute("DoseSeg.Structure")])


def test_run_all_reuses_its_nodes(scene, loaded, fake_cli):
    ct, reference, segmentation = loaded
    logic = DoseSegPipeline(scene)
    first = logic.runAll(ct, segmentation, reference)
    count = scene.GetNumberOfNodes()
    second = logic.runAll(ct, segmentation, reference, doseNode=first["dose"])
    assert second["dose"] is first["dose"] and second["segmentation"] is segmentation
    for key in ("dvhChart", "metrics", "constraints", "radiomics", "comparison"):
        assert second[key] is first[key], key
    assert scene.GetNumberOfNodes() == count, "a second Run all adds no node"


def test_incomplete_run_folder_is_refused_by_name(scene, loaded, tmp_path):
    ct, _, segmentation = loaded
    (tmp_path / "dose.nrrd").write_bytes(b"")
    with pytest.raises(DoseSegError, match=r"not a complete `doseseg run` output \(missing summary.json, "
                                           r"segmentation.seg.nrrd, dvh.csv"):
        DoseSegPipeline(scene).loadRunFolder(tmp_path, ct, segmentation)


def test_dvh_csv_with_a_bad_value_names_the_file(tmp_path):
    (tmp_path / "dvh.csv").write_text("structure,dose_gy,volume_cc,volume_pct\nPTV70,0,1.5,100\nPTV70,x,1,50\n")
    with pytest.raises(DoseSegError, match="dvh.csv: DVH of 'PTV70' holds a value that is not a number"):
        readDvhCsv(tmp_path / "dvh.csv")


# -- pyradiomics from SlicerRadiomics, or no radiomics -------------------------------------------------------------


def test_without_pyradiomics_run_all_skips_radiomics_and_the_step_says_why(scene, loaded, fake_cli, monkeypatch,
                                                                           tmp_path):
    ct, reference, segmentation = loaded
    logic = DoseSegPipeline(scene)
    monkeypatch.setattr(dependencies, "radiomicsFolder", lambda: tmp_path)  # pyradiomics found (SlicerRadiomics)
    assert dependencies.radiomicsProblem() is None
    logic.runAll(ct, segmentation, reference)
    assert "--no-radiomics" not in fake_cli()[-1]["args"]

    monkeypatch.setattr(dependencies, "radiomicsFolder", lambda: None)
    before = scene.GetNumberOfNodes()
    with pytest.raises(DoseSegError, match="install SlicerRadiomics from the Extensions Manager"):
        logic.startExtractRadiomics(ct, segmentation)
    assert scene.GetNumberOfNodes() == before and len(fake_cli()) == 1, "nothing started"
    logic.runAll(ct, segmentation, reference)
    assert fake_cli()[-1]["args"][0] == "run" and "--no-radiomics" in fake_cli()[-1]["args"]


def test_slicerradiomics_copy_is_found_and_given_to_the_command(tmp_path, monkeypatch):
    """SlicerRadiomics puts its pyradiomics on Slicer's Python path; the background command gets that folder."""
    folder = tmp_path / "SlicerRadiomics" / "lib" / "site-packages"
    (folder / "radiomics").mkdir(parents=True)
    (folder / "radiomics" / "__init__.py").write_text("__version__ = 'from SlicerRadiomics'\n")
    monkeypatch.delitem(sys.modules, "radiomics", raising=False)
    monkeypatch.syspath_prepend(str(folder))
    assert dependencies.radiomicsFolder() == folder.resolve() and dependencies.radiomicsProblem() is None
    env = cliEnvironment()
    assert str(folder.resolve()) in env["PYTHONPATH"].split(os.pathsep)
    found = subprocess.run([sys.executable, "-c", "import radiomics; print(radiomics.__version__)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert found.stdout.strip() == "from SlicerRadiomics"
