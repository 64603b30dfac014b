"""Option vocabularies (core/options.py): one enum per family, checked where a value enters, with a suggestion."""

from __future__ import annotations

import ast
import csv
import io
import json
from pathlib import Path

import pytest

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device, DvhMethod, Option, SegLoss, StructureSource

REPO = Path(__file__).resolve().parents[1]
FAMILIES = (Device, DvhMethod, SegLoss, StructureSource)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_member_parses_from_its_text_and_reads_as_its_text(family: type[Option]) -> None:
    for member in family:
        assert family.parse(member.value) is member
        assert family.parse(member) is member
        assert member == member.value and str(member) == f"{member}" == member.value
    row = io.StringIO()
    csv.writer(row).writerow(list(family))
    assert row.getvalue().strip() == ",".join(family.choices())
    assert json.loads(json.dumps(list(family))) == list(family.choices())


@pytest.mark.parametrize(("family", "text", "message"), [
    (DvhMethod, "voxels", "unknown DVH method 'voxels' (one of auto, voxel; did you mean 'voxel'?)"),
    (DvhMethod, "exact", "unknown DVH method 'exact' (one of auto, voxel)"),
    (Device, "cuda:0", "unknown device 'cuda:0' (one of auto, cpu, cuda; did you mean 'cuda'?)"),
    (SegLoss, "dose-lo", "unknown loss 'dose-lo' (one of bce_dice, doselo; did you mean 'doselo'?)"),
    (Device, "AUTO", "unknown device 'AUTO'"),  # texts are exact, as on the command line
])
def test_an_unknown_text_names_the_valid_ones_and_the_closest(family: type[Option], text: str, message: str) -> None:
    with pytest.raises(DoseSegError) as error:
        family.parse(text)
    assert str(error.value).startswith(message)


def test_library_entry_points_check_their_options_first(phantom_case) -> None:
    from DoseSegLib.analysis.dvh import compute_dvhs
    from DoseSegLib.analysis.plan import evaluate_plan
    from DoseSegLib.run.results import RunOptions

    with pytest.raises(DoseSegError, match="did you mean 'voxel'"):
        evaluate_plan(phantom_case, dvh_method="voxels")
    with pytest.raises(DoseSegError, match="did you mean 'voxel'"):
        compute_dvhs(phantom_case.dose, phantom_case.structures, method="voxels")
    with pytest.raises(DoseSegError, match="unknown DVH method"):
        RunOptions(dvh_method="Auto")
    assert RunOptions(dvh_method="voxel").dvh_method is DvhMethod.VOXEL
    assert evaluate_plan(phantom_case, dvh_method="voxel").method is DvhMethod.VOXEL


def test_model_entry_points_check_the_device_before_loading() -> None:
    pytest.importorskip("torch")
    from DoseSegLib.models.common.devices import select_device
    from DoseSegLib.models.seg.training import SegTrainConfig
    from DoseSegLib.run.pipeline import Pipeline

    assert select_device("cpu").type == select_device(Device.CPU).type == "cpu"
    with pytest.raises(DoseSegError, match="unknown device 'gpu'"):
        Pipeline(device="gpu")
    with pytest.raises(DoseSegError, match="did you mean 'doselo'"):
        SegTrainConfig(loss="doselos")
    assert SegTrainConfig(loss="doselo").loss is SegLoss.DOSELO


def test_the_command_line_offers_the_enum_values() -> None:
    from DoseSegLib.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    offered = {(command, action.dest): tuple(action.choices)
               for command, parser in sub.choices.items() for action in parser._actions
               if action.dest in ("device", "dvh_method", "loss")}
    assert offered[("run", "device")] == Device.choices()
    assert offered[("run", "dvh_method")] == DvhMethod.choices()
    assert offered[("train-seg", "loss")] == SegLoss.choices()
    expected = {"device": Device.choices(), "dvh_method": DvhMethod.choices(), "loss": SegLoss.choices()}
    assert all(choices == expected[dest] for (_, dest), choices in offered.items())


def test_option_texts_are_not_retyped_in_the_library() -> None:
    """The texts of the families whose words are not common English live only in core/options.py."""
    own = {"voxel", "bce_dice", "doselo"}
    found = []
    for path in (REPO / "DoseSegLib").rglob("*.py"):
        if path.name == "options.py" and path.parent.name == "core":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in own:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not found
