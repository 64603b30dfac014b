"""What ``run`` and ``predict-dose`` record: a dose not normalised, once in each output (``--no-normalise``: a
note; left as predicted: the warning saying why) in summary.json, the report and notes.txt; a patient given as
``.`` or ``..`` named by its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_helpers import predict_the_reference, write_tiny_convention

from DoseSegLib.cli.main import main
from DoseSegLib.run.trust import NOT_NORMALISED

LEFT_AS_PREDICTED = "needs a factor 1.50, outside 0.7-1.4: the dose is left as predicted"


def _run_and_predict(patient: Path | str, out: Path, *flags: str) -> tuple[dict, str]:
    """summary.json of ``run`` and notes.txt of ``predict-dose`` on ``patient`` with ``flags``."""
    assert main(["run", str(patient), "-o", str(out / "run"), "--no-segment", "--no-radiomics", "--device", "cpu",
                 *flags]) == 0
    assert main(["predict-dose", str(patient), "-o", str(out / "pred"), "--device", "cpu", *flags]) == 0
    summary = json.loads((out / "run" / "summary.json").read_text())
    return summary, (out / "pred" / summary["patient"] / "notes.txt").read_text()


@pytest.mark.parametrize(("ratio", "flags", "note"), [
    (1.0, ["--no-normalise"], NOT_NORMALISED),
    (1.5, [], LEFT_AS_PREDICTED),  # normalising takes a factor 1.5: implausible, the dose is left as predicted
], ids=["no-normalise", "left-as-predicted"])
def test_a_dose_not_normalised_says_why_in_every_output(
    ratio: float, flags: list[str], note: str, tiny_models: Path, phantom_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_tiny_convention(tiny_models, "mean", ratio)
    predict_the_reference(monkeypatch)
    summary, notes = _run_and_predict(phantom_dir, tmp_path, *flags)
    assert summary["normalisation"] is None
    recorded = [*summary["notes"], *summary["warnings"]]
    assert sum(note in n for n in recorded) == 1, recorded  # once: a note, or the warning when it was abandoned
    assert any(note in n for n in summary["notes" if flags else "warnings"]), recorded
    assert (tmp_path / "run" / "report.html").read_text().replace("&#x27;", "'").count(note) == 1
    assert notes.count(note) == 1


def test_the_control_normalised_dose_has_no_such_note(
    tiny_models: Path, phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_tiny_convention(tiny_models, "mean", 1.02)
    predict_the_reference(monkeypatch)
    summary, notes = _run_and_predict(phantom_dir, tmp_path)
    assert summary["normalisation"]["factor"] == pytest.approx(1.02, abs=1e-4)
    assert not any("not normalised" in n or "left as predicted" in n for n in [*summary["notes"], notes])


@pytest.mark.parametrize("where", [".", ".."])
def test_a_patient_given_as_dot_is_named_by_its_folder(
    where: str, tiny_models: Path, phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(phantom_dir if where == "." else phantom_dir / "structures")
    summary, notes = _run_and_predict(where, tmp_path)
    assert summary["patient"] == phantom_dir.name
    assert (tmp_path / "pred" / phantom_dir.name / "dose.nrrd").is_file() and notes
    assert sorted(p.name for p in (tmp_path / "pred").iterdir() if p.is_dir()) == [phantom_dir.name]
