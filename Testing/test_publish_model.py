"""publish-model: a training run published into the user's catalogue, its uncertainty, applicability and
prescription calibrations on the run's validation split, and a publish that fails or replaces a model
leaving the models folder consistent (the clinic-archive workflow is in test_own_model.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from model_helpers import CLINIC_MODEL as MODEL
from model_helpers import CLINIC_SHAPE as SHAPE
from model_helpers import CLINIC_SPACING as SPACING
from model_helpers import tiny_dose_config

from DoseSegLib.core.errors import DoseSegError


def test_publishing_into_a_damaged_catalogue_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from DoseSegLib.models.common.publish import publish_weights

    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "catalogue.json").write_text("{not json")
    with pytest.raises(DoseSegError, match="catalogue missing or invalid"):
        publish_weights(weights, folder, "mine", "dose", "1.0", "mine.md")
    assert sorted(p.name for p in folder.iterdir()) == ["catalogue.json"]



def test_publish_calibrates_the_uncertainty_on_a_large_enough_validation_split(tmp_path: Path) -> None:
    import torch

    from DoseSegLib.io.phantom import write_phantom_patient
    from DoseSegLib.models.common import training_loop as loop
    from DoseSegLib.models.dose.net import DoseNet
    from DoseSegLib.models.dose.predict import load_dose_model
    from DoseSegLib.models.dose.uncertainty import check_uncertainty
    from DoseSegLib.models.features.applicability import applicability_path
    from DoseSegLib.run.calibration import MIN_PATIENTS
    from DoseSegLib.run.publish import publish_run

    torch.manual_seed(0)
    cohort, run, models = tmp_path / "cohort", tmp_path / "run", tmp_path / "models"
    for seed in range(2 * MIN_PATIENTS):
        part = "validation" if seed < MIN_PATIENTS else "train"
        write_phantom_patient(cohort / part / f"P{seed:03d}", shape=SHAPE, spacing=SPACING, seed=seed)
    run.mkdir()
    net = DoseNet(tiny_dose_config())
    loop.save_weights(run / "best.pt", net, {"epoch": 1, "val_dose_score": 9.0, "patch": [32, 32, 32]})
    (run / "config.json").write_text(json.dumps({"site": {"site": "head and neck", "oars": [], "folder":
                                                          str(cohort)}}))
    entry = publish_run(run, MODEL, models)
    sidecar = json.loads((models / f"{MODEL}.uncertainty.json").read_text())
    assert sidecar["sha256"] == entry.sha256 and sidecar["validation"]["patients"] == MIN_PATIENTS
    card = (models / f"{MODEL}.md").read_text()
    assert f"calibrated on {MIN_PATIENTS} validation patients" in card
    assert f"x prescription over {MIN_PATIENTS} training plans" in card  # the prescription convention
    assert json.loads((models / f"{MODEL}.prescription.json").read_text())["sha256"] == entry.sha256
    assert "applicability check: not calibrated" in card  # 10 validation patients: too few for 5 % false alarms
    model = load_dose_model(device="cpu", weights=entry.file)
    check_uncertainty(replace(model, entry=entry), 0.9)  # the sidecar is found beside the user model
    assert applicability_path(replace(model, entry=entry)) == models / f"{MODEL}.applicability.json"  # trust's place
    written = {path.name for path in models.iterdir()} - {"catalogue.json"}
    (cohort / "validation" / "P000").rename(tmp_path / "moved")
    again = publish_run(run, MODEL, models, force=True)
    card = (models / f"{MODEL}.md").read_text()
    assert f"(--uncertainty): not calibrated ({MIN_PATIENTS - 1} validation patients, at least {MIN_PATIENTS} needed)" \
        in card
    # the same weights (same sha256): the replaced model's uncertainty sidecar must not be inherited
    assert again.sha256 == entry.sha256
    assert not (models / f"{MODEL}.uncertainty.json").exists(), "the replaced model's calibration is inherited"
    with pytest.raises(DoseSegError, match="calibrat"):
        check_uncertainty(replace(model, entry=again), 0.9)
    assert json.loads((models / f"{MODEL}.prescription.json").read_text())["sha256"] == entry.sha256  # still calibrated
    from DoseSegLib.models.common.publish import MODEL_FILES

    assert written <= {MODEL + suffix for suffix in MODEL_FILES}, "a file publish_run writes is not in MODEL_FILES"


def _tiny_run(run: Path, seed: int) -> Path:
    """A dose training run folder (best.pt of a tiny random network, config.json) as publish-model reads it."""
    import torch

    from DoseSegLib.models.common import training_loop as loop
    from DoseSegLib.models.dose.net import DoseNet

    torch.manual_seed(seed)
    run.mkdir()
    loop.save_weights(run / "best.pt", DoseNet(tiny_dose_config()), {"epoch": 1, "val_dose_score": 9.0,
                                                                      "patch": [32, 32, 32]})
    (run / "config.json").write_text(json.dumps({"site": {"site": "head and neck", "oars": []}}))
    return run


def _files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_an_interrupted_publish_leaves_the_catalogue_and_the_models_folder_as_they_were(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalogue entry comes last: a failure after the card is written (weights, sidecar and card
    written) leaves no catalogued model without a card, and no file of the failed publish."""
    from DoseSegLib.models.common import publish as common
    from DoseSegLib.run import publish

    models = tmp_path / "models"
    earlier = publish.publish_run(_tiny_run(tmp_path / "run1", 1), "earlier", models, calibrate=False)
    before = _files(models)
    assert sorted(before) == ["catalogue.json", "earlier.md", "earlier.pt"], "a publish leaves no staging folder"

    def calibrations(entry, summary, data, calibrate):  # a calibration sidecar, written where the real one is
        (entry.file.parent / f"{entry.name}.uncertainty.json").write_text("{}")
        return {"uncertainty intervals (--uncertainty)": "calibrated."}

    write_atomic = publish.write_atomic

    def card_then_failure(path: Path, text: str) -> None:
        write_atomic(path, text)
        if path.name == f"{MODEL}.md":
            raise RuntimeError("interrupted after the card")

    monkeypatch.setattr(publish, "calibrations", calibrations)
    monkeypatch.setattr(publish, "write_atomic", card_then_failure)
    run2 = _tiny_run(tmp_path / "run2", 2)
    with pytest.raises(RuntimeError, match="interrupted after the card"):
        publish.publish_run(run2, MODEL, models)
    assert _files(models) == before and sorted(p.name for p in models.iterdir()) == sorted(before)

    def catalogue_failure(folder: Path, row: dict):
        raise OSError("disk full")

    monkeypatch.setattr(publish, "write_atomic", write_atomic)
    monkeypatch.setattr(common, "add_to_catalogue", catalogue_failure)
    with pytest.raises(OSError, match="disk full"):  # replacing a model: its files come back
        publish.publish_run(run2, "earlier", models, force=True)
    assert _files(models) == before and sorted(p.name for p in models.iterdir()) == sorted(before)
    monkeypatch.undo()
    replaced = publish.publish_run(run2, "earlier", models, force=True, calibrate=False)
    assert replaced.sha256 != earlier.sha256 and replaced.file == models / "earlier.pt"
    assert sorted(_files(models)) == ["catalogue.json", "earlier.md", "earlier.pt"]


def test_republishing_removes_the_replaced_models_sidecars_it_does_not_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """publish-model --force of the same weights whose calibrations now fail: the replaced model's sidecars
    (same sha256, so still accepted) are removed, nothing else is; a failed commit puts them back."""
    from DoseSegLib.models.common import publish as common
    from DoseSegLib.run import publish

    models, run = tmp_path / "models", _tiny_run(tmp_path / "run", 3)
    sidecars = [f"{MODEL}{suffix}" for suffix in (".uncertainty.json", ".applicability.json", ".prescription.json")]

    def calibrated(entry, summary, data, calibrate):  # every sidecar, written where the real ones are
        for name in sidecars:
            (entry.file.parent / name).write_text(json.dumps({"sha256": entry.sha256}))
        return {"all": "calibrated."}

    monkeypatch.setattr(publish, "calibrations", calibrated)
    first = publish.publish_run(run, MODEL, models)
    monkeypatch.undo()
    others = {f"{MODEL}.notes.txt": b"the user's", f"{MODEL}x.uncertainty.json": b"{}",
              "other.uncertainty.json": b"{}", f"{MODEL}.uncertainty.json.bak": b"{}"}
    for name, data in others.items():
        (models / name).write_bytes(data)
    before = _files(models)
    assert set(sidecars) <= set(before)

    def catalogue_failure(folder: Path, row: dict):
        raise OSError("disk full")

    monkeypatch.setattr(common, "add_to_catalogue", catalogue_failure)
    with pytest.raises(OSError, match="disk full"):  # the sidecars come back with the replaced files
        publish.publish_run(run, MODEL, models, force=True, calibrate=False)
    assert _files(models) == before and sorted(p.name for p in models.iterdir()) == sorted(before)
    monkeypatch.undo()
    again = publish.publish_run(run, MODEL, models, force=True, calibrate=False)  # no calibration now
    assert again.sha256 == first.sha256
    after = _files(models)
    assert not set(sidecars) & set(after), "a sidecar of the replaced model is still beside the same weights"
    assert {name: after.get(name) for name in others} == others  # not DoseSeg's files of this model: kept
    assert sorted(after) == sorted([*others, "catalogue.json", f"{MODEL}.md", f"{MODEL}.pt"])
    assert "skipped (--no-calibration)" in after[f"{MODEL}.md"].decode()
