"""The dose refiner: network, loss, training steps, catalogue loading and use in predict-dose."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import TINY_REFINER as TINY
from model_helpers import write_refiner_catalogue

from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.models.dose.inputs import CHANNELS
from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose
from DoseSegLib.models.dose.refine_net import RefineNet, refine_box, refine_inputs
from DoseSegLib.models.dose.refine_training import RefineConfig, flip_patch, loss_weights, refine_loss

TARGETS, MASK = 2, -1  # channel indices in the refiner input


def _batch(shape=(16, 16, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    """A refiner input with a 70 Gy cube target, a base dose too cold at its edge, and the true dose."""
    torch.manual_seed(0)
    dose = torch.zeros(1, 1, *shape)
    dose[..., 4:12, 4:12, 4:12] = 72.0
    first = dose.clone()
    first[..., 4:12, 4:12, 4] = 60.0  # the cold edge
    inputs = torch.zeros(1, len(CHANNELS), *shape)
    inputs[:, 1, 4:12, 4:12, 4:12] = 1.0  # targets (Rx / 70)
    inputs[:, MASK] = 1.0
    return refine_inputs(first, inputs), dose


def _zero_gain(net: RefineNet) -> RefineNet:
    with torch.no_grad():
        net.gain.fill_(0.0)
    return net


def test_forward_shape_and_a_zero_gain_returns_the_base_dose() -> None:
    x, _ = _batch()
    x[:, MASK, :2] = 0
    net = _zero_gain(RefineNet(TINY).eval())
    out = net(x)
    assert out.shape == (1, 1, 16, 16, 16)
    assert torch.equal(out, torch.relu(x[:, :1] * 70.0) * (x[:, MASK:] > 0.5))
    with torch.no_grad():
        net.gain.fill_(1.0)
    out = net(x)
    assert torch.all(out[0, 0, :2] == 0) and out.min() >= 0 and not torch.equal(out[0, 0, 2:], 70 * x[0, 0, 2:])


def test_loss_weights_target_edges_and_hot_spots() -> None:
    x, dose = _batch()
    weights = loss_weights(x, dose, RefineConfig(structure_weight=0.5, edge_weight=1.0, hot_weight=2.0))
    assert weights[0, 0, 0, 0, 0] == 1.0  # far from any structure
    assert weights[0, 0, 8, 8, 3] == 2.0  # just outside the target's boundary
    assert weights[0, 0, 8, 8, 8] == 1.0 + 0.5 + 2.0  # inside, deep, 72 Gy > 70 Gy Rx
    assert weights[0, 0, 8, 8, 4] == 1.0 + 0.5 + 1.0 + 2.0  # on the boundary and hot


def test_training_steps_lower_the_loss() -> None:
    x, dose = _batch()
    net = RefineNet(TINY)
    config = RefineConfig(moment_weight=0.05)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    start = refine_loss(net(x), x, dose, config).item()
    for _ in range(30):
        loss = refine_loss(net(x), x, dose, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert refine_loss(net(x), x, dose, config).item() < 0.8 * start


def test_flip_mirrors_the_base_dose_and_swaps_parotids() -> None:
    x, dose = _batch()
    right = 1 + CHANNELS.index("RightParotid")
    x[0, right, 0] = 1.0
    flipped = flip_patch({"x": x[0], "dose": dose[0]})
    assert torch.equal(flipped["x"][0], torch.flip(x[0, 0], dims=(0,)))
    assert torch.all(flipped["x"][1 + CHANNELS.index("LeftParotid"), -1] == 1.0)
    assert torch.equal(flipped["dose"], torch.flip(dose[0], dims=(1,)))


def _case() -> Case:
    shape = (40, 36, 32)
    x, y, _ = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    body = (x / 16) ** 2 + (y / 14) ** 2 < 1
    ct = Volume(np.where(body, 40, -1000).astype(np.int16), (3.9, 3.9, 2.5), (-70.0, -60.0, -40.0))
    ptv = ct.with_array(body & (np.abs(x - 4) < 5) & (np.abs(y) < 5))
    return Case("synthetic", ct, {"PTV70": ptv}, None, ct.with_array(body))


def test_catalogue_refiner_loads_its_base_and_is_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOSESEG_MODELS", str(write_refiner_catalogue(tmp_path)))
    model = load_dose_model(device="cpu")
    assert model.entry.name == "refined" and isinstance(model.refiner, RefineNet)
    assert model.entry.describe()["base"] == "base"
    base = load_dose_model("base", device="cpu")
    assert base.refiner is None
    case = _case()
    refined, plain = predict_case_dose(model, case), predict_case_dose(base, case)
    assert refined.same_grid(case.ct) and refined.array.min() >= 0
    assert np.all(refined.array[~case.possible_dose_mask.array] == 0)
    assert not np.allclose(refined.array, plain.array)  # the refiner changed the dose
    with (tmp_path / "refiner.pt").open("ab") as file:
        file.write(b"tampered")
    with pytest.raises(DoseSegError, match="does not match"):
        load_dose_model(device="cpu")


def test_refiner_with_zero_gain_keeps_the_base_prediction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOSESEG_MODELS", str(write_refiner_catalogue(tmp_path, gain=0.0)))
    case = _case()
    refined = predict_case_dose(load_dose_model(device="cpu"), case)
    np.testing.assert_allclose(refined.array, predict_case_dose(load_dose_model("base", "cpu"), case).array,
                               atol=1e-4)


def test_refine_box_pads_and_crops_back() -> None:
    x, _ = _batch((20, 13, 9))
    net = RefineNet(TINY).eval()
    first, inputs = x[0, 0].numpy() * 70, x[0, 1:].numpy()
    dose = refine_box(net, first, inputs, torch.device("cpu"))
    assert dose.shape == (20, 13, 9) and not np.allclose(dose, first)
    np.testing.assert_allclose(refine_box(_zero_gain(net), first, inputs, torch.device("cpu")), first, atol=1e-4)


def test_train_dose_refiner_command(tmp_path: Path, phantom_dataset: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys) -> None:
    """Train on phantoms with a tiny base from the catalogue, resume, then predict with the best.pt."""
    from DoseSegLib.cli.main import main
    from DoseSegLib.io.patient import read_volume

    monkeypatch.setenv("DOSESEG_MODELS", str(write_refiner_catalogue(tmp_path)))
    data = phantom_dataset
    tiny = ["--data", str(data), "--channels", "4", "8", "16", "--patch", "16", "16", "16", "--device", "cpu",
            "--workers", "1"]
    run = tmp_path / "run"
    assert main(["train-dose-refiner", "--out", str(run), "--epochs", "2", *tiny]) == 0
    assert main(["train-dose-refiner", "--out", str(run), "--epochs", "3", *tiny]) == 0  # resumes
    with (run / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]  # epoch 0: the base model alone
    assert all(np.isfinite(float(r["val_dose_score"])) for r in rows)
    assert torch.load(run / "best.pt", weights_only=True)["meta"]["base_model"] == "base"
    patient = data / "validation" / "pt_3"
    assert main(["predict-dose", str(patient), "-o", str(tmp_path / "pred"), "--weights", str(run / "best.pt"),
                 "--device", "cpu"]) == 0
    assert read_volume(tmp_path / "pred" / "pt_3" / "dose.nrrd").same_grid(read_volume(patient / "ct.nrrd"))
    capsys.readouterr()
    assert main(["train-dose-refiner", "--out", str(tmp_path / "bad"), "--base-model", "refined", *tiny]) == 1
    assert "is itself a refiner" in capsys.readouterr().err


def test_a_refiner_of_a_refiner_is_a_catalogue_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_refiner_catalogue(tmp_path)
    rows = json.loads((folder / "catalogue.json").read_text())["models"]
    rows.append({**rows[1], "name": "twice", "default": False, "base": "refined"})
    (folder / "catalogue.json").write_text(json.dumps({"models": rows}))
    monkeypatch.setenv("DOSESEG_MODELS", str(folder))
    with pytest.raises(DoseSegError, match="is itself a refiner"):
        load_dose_model("twice", device="cpu")
