"""Shared fixtures of the MRML tests (PyPI slicer-core): a scene, the phantom's nodes, a stand-in command line.

A pytest plugin of the test_mrml_* modules (``pytest_plugins = ["mrml_fixtures"]``); holds no test.
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import mrml_helpers  # noqa: F401 (puts DoseSeg/ on sys.path)
import pytest
import slicer
from DoseSegLogicLib import jobs, nodes

from DoseSegLib import OARS
from DoseSegLib.analysis.constraints import load_constraints
from DoseSegLib.analysis.dvh import write_dvh_csv
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.io.patient import write_segmentation, write_volume
from DoseSegLib.io.phantom import make_phantom


CONVERTER_RULES = ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule")


@pytest.fixture(scope="session")
def converter_rules():
    """Register the segmentation converter rules as Slicer's Segmentations module does: each one that is missing
    (another test module may have registered one of them only: closed-surface segments then fail to convert)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for name in CONVERTER_RULES:
        if name not in present:
            factory.RegisterConverterRule(getattr(slicer, name)())


@pytest.fixture
def scene(converter_rules):
    scene = slicer.vtkMRMLScene()
    for _ in range(3):
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    yield scene
    scene.Clear(True)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


@pytest.fixture
def loaded(scene, phantom):
    """CT, dose and segmentation nodes of the phantom."""
    ct = nodes.addVolumeNode(scene, phantom.ct, "CT")
    dose = nodes.addVolumeNode(scene, phantom.dose, "Dose")
    segmentation = nodes.newSegmentationNode(scene, "Structures", ct)
    nodes.addSegments(segmentation, phantom.structures)
    return ct, dose, segmentation


CUSTOM_GOALS = "structure,metric,operator,value,unit,note\nLarynx,Dmean,<,12,Gy,a goal of this run only\n"


def write_run_folder(folder: Path, phantom, goals_file: Path) -> None:
    """What ``doseseg run`` writes for one patient, made by DoseSegLib's own writers, with choices the
    module's in-process defaults do not make (a 0.5 Gy DVH step, a one-goal constraints file)."""
    predicted = phantom.dose.with_array(phantom.dose.array * 0.9)  # stands in for a prediction
    write_volume(folder / "dose.nrrd", predicted)
    write_segmentation(folder / "segmentation.seg.nrrd", {name: phantom.structures[name] for name in OARS})
    goals = load_constraints(goals_file)
    evaluate_plan(replace(phantom, dose=predicted), step_gy=0.5, constraints=goals).write(folder)
    write_dvh_csv(folder / "dvh_reference.csv", evaluate_plan(phantom, step_gy=0.5, constraints=goals).dvhs)
    write_volume(folder / "dose_difference.nrrd", predicted.with_array(predicted.array - phantom.dose.array))
    (folder / "comparison.csv").write_text("structure,metric,reference,predicted,difference\n"
                                           "PTV70,D95,70.1,63.09,-7.01\n")
    (folder / "radiomics.csv").write_text("structure,original_firstorder_Mean\nPTV70,40.5\n")
    (folder / "summary.json").write_text(json.dumps({"patient": "patient"}))


@pytest.fixture
def fake_cli(tmp_path, monkeypatch, phantom):
    """The command line replaced by a script that copies ready outputs: the models are not under test here.

    Returns a function giving the calls so far, each {"args": [...], "inputs": [the patient folder's files]}.
    """
    ready = tmp_path / "ready"
    ready.mkdir()
    (tmp_path / "goals.csv").write_text(CUSTOM_GOALS)
    write_run_folder(ready, phantom, tmp_path / "goals.csv")
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "fake_cli.py"
    script.write_text(textwrap.dedent(f"""
        import json, shutil, sys
        from pathlib import Path
        args = sys.argv[1:]
        patient = Path(args[1])
        inputs = sorted(p.relative_to(patient).as_posix() for p in patient.rglob("*.nrrd"))
        with open({str(calls)!r}, "a") as handle:
            handle.write(json.dumps({{"args": args, "inputs": inputs}}) + "\\n")
        shutil.copytree({str(ready)!r}, args[args.index("-o") + 1], dirs_exist_ok=True)
    """))
    monkeypatch.setattr(jobs, "cliCommand", lambda args: [sys.executable, str(script), *map(str, args)])
    return lambda: [json.loads(line) for line in calls.read_text().splitlines()]


@pytest.fixture
def rt_study(scene):
    """A plan as SlicerRT's DICOM-RT import leaves it (see DoseSegTestLib.rtscene): CT, RTSTRUCT segments on
    their own extents (BODY past the CT, a closed-surface cord past the last slice, a finer larynx), an RTDOSE
    smaller than the CT in a CGY study, the TPS target name PTV1."""
    from DoseSegTestLib.rtscene import buildRtStudy

    return buildRtStudy(scene)
