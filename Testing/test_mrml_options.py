"""Everything the command line takes for a patient, from the panel and the console (PatientOptions), what the panel
pre-selects from a SlicerRT scene, the run summary's messages and the error dialog's headline."""

from __future__ import annotations

from pathlib import Path

import pytest
import mrml_helpers
import slicer

pytest_plugins = ["mrml_fixtures"]  # its fixtures: scene, rt_study, fake_cli; it puts DoseSeg/ on sys.path

from DoseSegLogicLib import jobs, runfolder, sceneinputs
from DoseSegLogicLib.options import PatientOptions, formatPrescriptions, parsePrescriptions
from DoseSegLogicLib.pipeline import DoseSegPipeline

from DoseSegLib import DoseSegError
from DoseSegLib.cli.main import build_parser


def test_prescriptions_text_round_trips_and_bad_text_is_refused():
    assert parsePrescriptions("PTV1=60, PTV_Low = 54.5;CTV=50") == {"PTV1": 60.0, "PTV_Low": 54.5, "CTV": 50.0}
    assert parsePrescriptions("  ") == {}
    assert parsePrescriptions(formatPrescriptions({"PTV1": 60.0, "PTV 2": 54.0})) == {"PTV1": 60.0, "PTV 2": 54.0}
    for bad in ("PTV1", "PTV1=abc", "=60", "PTV1=0", "PTV1=7000"):
        with pytest.raises(DoseSegError, match="expected NAME=GY"):
            parsePrescriptions(bad)


@pytest.mark.parametrize("command", ["align", "segment", "predict-dose", "radiomics", "run", "dvh"])
def test_every_option_reaches_the_commands_that_take_it_and_they_parse(command, tmp_path):
    options = PatientOptions(prescriptions={"PTV1": 60.0}, namesFile=str(tmp_path / "names.json"),
                             goalsFile="prostate", anySite=True, uncertainty=True, level=0.8, dvhMethod="voxel",
                             device="cpu", mirrorAveraging=True, allowHighDose=True, doseModel="clinic-prostate")
    args = options.arguments(command)
    parsed = build_parser().parse_args([command, str(tmp_path), *args, "-o", str(tmp_path / "out")])
    if command in ("align", "predict-dose", "radiomics", "run", "dvh"):
        assert parsed.prescription == [("PTV1", 60.0)] and parsed.names == tmp_path / "names.json"
    if command in ("segment", "predict-dose", "run"):
        assert parsed.device == "cpu" and parsed.tta
    if command in ("predict-dose", "run"):
        assert parsed.any_site and parsed.uncertainty and parsed.level == 0.8 and parsed.model == "clinic-prostate"
    if command in ("run", "dvh"):
        assert parsed.constraints == Path("prostate") and parsed.dvh_method == "voxel" and parsed.allow_high_dose
    if command == "dvh":
        assert parsed.step == 0.1


def test_panel_fields_become_options():
    options = PatientOptions.fromPanel("PTV1=60", Path("."), "prostate", Path(""), "voxel", 0.5, "cuda", True, True,
                                       False)
    assert options == PatientOptions({"PTV1": 60.0}, None, "prostate", True, False, 0.9, "voxel", 0.5, "cuda", True)
    assert PatientOptions.fromPanel("", "", "head-and-neck", "/goals.csv", "auto", 0.1, "auto", False, False,
                                    False).goalsFile == "/goals.csv", "a goals file replaces the site table"
    args = PatientOptions.fromPanel("", "", "head-and-neck", "", "auto", 0.1, "auto", False, False, False,
                                    " clinic-prostate ").arguments("run")
    assert args[args.index("--model") + 1] == "clinic-prostate", "the panel's dose model reaches --model"
    assert "--model" not in PatientOptions().arguments("run"), "empty: the bundled default"
    for bad in ({"dvhMethod": "fancy"}, {"device": "tpu"}, {"level": 1.0}):
        with pytest.raises(DoseSegError):
            PatientOptions(**bad)


def test_the_ct_default_is_never_a_dose(rt_study):
    scene = rt_study.ct.GetScene()
    scene.RemoveNode(rt_study.ct)
    scene.AddNode(rt_study.ct)  # now after the dose in the scene's order
    assert sceneinputs.firstCtVolume(scene) is rt_study.ct
    assert sceneinputs.doseVolumes(scene) == [rt_study.dose]


class _Plan:
    """Stands for SlicerRT's vtkMRMLRTPlanNode (not in slicer-core): prescription dose and target segment."""

    def __init__(self, segmentation, segment_id: str, dose: float) -> None:
        self.segmentation, self.segment_id, self.dose = segmentation, segment_id, dose

    def GetPrescriptionDose(self) -> float:
        return self.dose

    def GetSegmentationNode(self):
        return self.segmentation

    def GetTargetSegmentID(self) -> str:
        return self.segment_id


def test_prescriptions_come_from_the_rtplan_then_the_study(rt_study):
    scene = rt_study.ct.GetScene()
    segmentation = rt_study.segmentation
    assert sceneinputs.knownPrescriptions(scene, segmentation) == {}
    target = segmentation.GetSegmentation().GetSegmentIdBySegmentName("PTV1")
    plans = [_Plan(segmentation, target, 66.0), _Plan(segmentation, "", 50.0)]
    assert sceneinputs.knownPrescriptions(scene, segmentation, plans) == {"PTV1": 66.0}
    sceneinputs.rememberPrescriptions(segmentation, {"PTV1": 60.0, "PTV56": 56.0})
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert shNode.GetItemAttribute(rt_study.study, sceneinputs.PRESCRIPTIONS_ATTRIBUTE) == "PTV1=60, PTV56=56"
    assert sceneinputs.knownPrescriptions(scene, segmentation) == {"PTV1": 60.0, "PTV56": 56.0}
    assert sceneinputs.knownPrescriptions(scene, segmentation, plans) == {"PTV1": 66.0, "PTV56": 56.0}, \
        "the RTPLAN's over an earlier run's"


def test_summary_applicability_and_warnings_become_messages():
    assert runfolder.summaryMessages({"patient": "p"}) == []
    assert runfolder.summaryMessages({"applicability": {"in_distribution": True, "score": 0.1}}) == []
    messages = runfolder.summaryMessages({
        "applicability": {"in_distribution": False, "score": 3.2, "threshold": 2.0, "reasons": ["no parotids"]},
        "warnings": ["outside the model's domain: no parotids", "target PTV1: dose given", ""]})
    assert messages[0].startswith("Outside the models' experience (score 3.2, threshold 2): no parotids")
    assert messages[1:] == ["target PTV1: dose given"]


def test_run_all_loads_the_summary_messages_and_plan_qa(scene, loaded, fake_cli, tmp_path):
    ready = tmp_path / "ready"
    (ready / "summary.json").write_text('{"applicability": {"in_distribution": false, "score": 5, "threshold": 1, '
                                        '"reasons": ["site"]}, "warnings": ["w1"]}')
    (ready / "plan_qa.csv").write_text("check,result\nhot spot,pass\n")
    ct, reference, segmentation = loaded
    out = DoseSegPipeline(scene).runAll(ct, segmentation, reference)
    assert len(out["messages"]) == 2 and "site" in out["messages"][0]
    assert out["planQa"].GetName() == runfolder.PLAN_QA_TABLE_NAME and out["planQa"].GetNumberOfRows() == 1


def test_the_error_headline_names_the_error_not_the_temporary_folder(tmp_path):
    folder = tmp_path / "DoseSeg-abc"
    lines = [f"reading {folder}/patient", f"{folder}/patient: error: target PTV1: give it, e.g. --prescription "
             "PTV1=70", f"wrote {folder}/output (0 of 1 patients)"]
    assert jobs.headline(lines, folder) == "patient: error: target PTV1: give it, e.g. --prescription PTV1=70"
    assert jobs.headline([], folder, 3) == "exit code 3"
    assert jobs.headline(["plain last line"], folder) == "plain last line"


def test_the_child_process_runs_in_utf8_mode():
    from DoseSegLogicLib.process import cliEnvironment

    assert cliEnvironment()["PYTHONUTF8"] == "1", "non-ASCII structure names must not garble on Windows"


def test_the_self_test_never_installs_packages_without_asking():
    source = (mrml_helpers.REPO / "DoseSeg" / "DoseSegTestLib" / "selftest.py").read_text()
    assert "installPackages" not in source and "pip_install" not in source
    assert "unmetRequirements(withModels)" in source, "it says what is missing instead"
    assert "buildRtStudy(slicer.mrmlScene)" in source and "writeTinyCatalogue" in source
    assert "logic.runAll(rt.ct, rt.segmentation, rt.dose, {TARGET_NAME: TARGET_GY})" in source


def test_run_all_reads_its_large_outputs_off_the_main_thread(scene, loaded, fake_cli, monkeypatch):
    import threading

    readers = []
    read = runfolder.readRunVolumes

    def recording(folder):
        readers.append(threading.current_thread() is threading.main_thread())
        return read(folder)

    monkeypatch.setattr(runfolder, "readRunVolumes", recording)
    ct, reference, segmentation = loaded
    job = DoseSegPipeline(scene).startRunAll(ct, segmentation, reference)
    outputs = job.wait(interval=0.05)
    assert readers == [False], "dose, segmentation and difference are read in the job's worker thread"
    assert outputs["dose"] is not None and outputs["doseDifference"] is not None
