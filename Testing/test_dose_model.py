"""Dose network, augmentation, training steps, checksum-checked loading and prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_volume
from DoseSegLib.models.common.catalogue import sha256_of
from DoseSegLib.models.common.devices import select_device
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.dose.augment import left_right_flip
from DoseSegLib.models.dose.inputs import CHANNELS, dose_input_channels
from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig
from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose, working_grid
from DoseSegLib.models.dose.training import masked_mae, moment_loss, random_patch
from DoseSegLib.models.seg.net import SegNet, SegNetConfig

TINY = DoseNetConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, dropout=0.0)


def _case(shape=(40, 36, 32), spacing=(3.9, 3.9, 2.5)) -> Case:
    """A body cylinder with a PTV70 and a spinal cord."""
    x, y, _ = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    body = (x / 16) ** 2 + (y / 14) ** 2 < 1
    ct = Volume(np.where(body, 40, -1000).astype(np.int16), spacing, (-70.0, -60.0, -40.0))
    ptv = ct.with_array(body & (np.abs(x - 4) < 5) & (np.abs(y) < 5))
    cord = ct.with_array(body & (np.abs(x) < 2) & (np.abs(y - 9) < 2))
    return Case("synthetic", ct, {"PTV70": ptv, "SpinalCord": cord}, None, ct.with_array(body))


def _catalogue(folder: Path, net: DoseNet, patch=(32, 32, 32)) -> Path:
    save_weights(folder / "tiny.pt", net, {"patch": list(patch)})
    entry = {"name": "tiny", "task": "dose", "file": "tiny.pt", "sha256": sha256_of(folder / "tiny.pt"),
             "version": "test", "default": True}
    (folder / "catalogue.json").write_text(json.dumps({"models": [entry]}))
    return folder


def test_network_output_shape_and_masking() -> None:
    torch.manual_seed(0)
    net = DoseNet(TINY).eval()
    x = torch.randn(1, len(CHANNELS), 32, 32, 16)
    x[:, -1] = 0
    x[:, -1, 8:24, 8:24, 4:12] = 1
    assert net(x).shape == (1, 1, 32, 32, 16)
    dose = net.predict(x)
    assert dose.min() >= 0
    assert torch.all(dose[0, 0][x[0, -1] == 0] == 0)


def test_input_channels_follow_prescription() -> None:
    case = _case()
    inputs = dose_input_channels(case)
    assert inputs.shape == (len(CHANNELS), *case.ct.shape)
    targets = inputs[CHANNELS.index("targets")]
    assert np.allclose(targets[case.structures["PTV70"].array], 1.0)
    assert np.all(inputs[CHANNELS.index("SpinalCord")][case.structures["SpinalCord"].array] == 1)
    assert inputs[0].min() >= -1 and inputs[0].max() <= 1


def test_no_target_is_a_clear_error() -> None:
    case = _case()
    del case.structures["PTV70"]
    with pytest.raises(DoseSegError, match="no target"):
        dose_input_channels(case)


def test_left_right_flip_swaps_parotids() -> None:
    right, left = CHANNELS.index("RightParotid") - 1, CHANNELS.index("LeftParotid") - 1
    rest = torch.zeros(len(CHANNELS) - 1, 4, 2, 2)
    rest[right, 0] = 1
    flipped = left_right_flip({"ct": torch.zeros(1, 4, 2, 2), "rest": rest})["rest"]
    assert flipped[left, 3].all() and not flipped[right].any()


def test_training_steps_decrease_loss() -> None:
    torch.manual_seed(0)
    case = _case()
    inputs = dose_input_channels(case)
    dose = (60 * inputs[CHANNELS.index("target_proximity")] * inputs[-1]).astype(np.float32)
    sample = {"inputs": inputs.astype(np.float16), "dose": dose}
    net = DoseNet(TINY)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(25):
        patch = random_patch(sample, (32, 32, 32), rng)
        x = torch.cat([patch["ct"], patch["rest"]])[None]
        loss = masked_mae(net(x), patch["dose"][None], patch["rest"][None], 0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_moment_loss_compares_the_dose_moments_of_each_structure() -> None:
    rest = torch.zeros(1, len(CHANNELS) - 1, 4, 4, 4)
    brainstem = 2 + OARS.index("Brainstem")  # rest holds every channel but the CT
    rest[0, brainstem, :2] = 1.0
    rest[0, -1] = 1.0  # possible-dose mask
    dose = torch.full((1, 1, 4, 4, 4), 20.0)
    assert moment_loss(dose, dose, rest).item() == 0.0
    # a uniform 10 Gy instead of 20 Gy in the brainstem: every moment is 10 Gy off
    assert moment_loss(torch.full_like(dose, 10.0), dose, rest).item() == pytest.approx(100.0, rel=1e-5)
    assert moment_loss(torch.full_like(dose, 10.0), dose, torch.zeros_like(rest)).item() == 0.0  # no structure

    # same mean, a hot spot: the high moments see it
    hot = dose.clone()
    hot[0, 0, 0, 0, 0], hot[0, 0, 1, 3, 3] = 30.0, 10.0
    assert moment_loss(hot, dose, rest).item() > 1.0

    pred = torch.full_like(dose, 10.0, requires_grad=True)
    optimizer = torch.optim.Adam([pred], lr=0.5)
    for _ in range(40):
        loss = moment_loss(pred, hot, rest)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert moment_loss(pred, hot, rest).item() < 0.05 * moment_loss(torch.full_like(dose, 10.0), hot, rest).item()


def test_checksum_mismatch_refuses_to_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _catalogue(tmp_path, DoseNet(TINY))
    monkeypatch.setenv("DOSESEG_MODELS", str(folder))
    assert load_dose_model(device="cpu").entry.name == "tiny"
    with (folder / "tiny.pt").open("ab") as file:
        file.write(b"tampered")
    with pytest.raises(DoseSegError, match="does not match"):
        load_dose_model(device="cpu")


def test_unknown_model_name_and_missing_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOSESEG_MODELS", str(_catalogue(tmp_path, DoseNet(TINY))))
    with pytest.raises(DoseSegError, match="unknown dose model 'nope'"):
        load_dose_model("nope")
    if not torch.cuda.is_available():
        with pytest.raises(DoseSegError, match="no CUDA"):
            select_device("cuda")


def test_prediction_on_ct_grid_and_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setenv("DOSESEG_MODELS", str(_catalogue(tmp_path, DoseNet(TINY))))
    model = load_dose_model(device="cpu")
    case = _case()
    dose = predict_case_dose(model, case, tta=True)
    assert dose.same_grid(case.ct) and dose.array.dtype == np.float32
    assert dose.array.min() >= 0
    assert np.all(dose.array[~case.possible_dose_mask.array] == 0)


def test_fine_ct_is_predicted_at_working_spacing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setenv("DOSESEG_MODELS", str(_catalogue(tmp_path, DoseNet(TINY))))
    case = _case(shape=(120, 110, 60), spacing=(1.0, 1.0, 1.0))
    grid = working_grid(case.ct)
    assert grid is not None and grid.spacing == (3.906, 3.906, 2.5)
    centre = lambda v: v.index_to_lps @ np.append((np.asarray(v.shape) - 1) / 2, 1)
    assert np.allclose(centre(grid), centre(case.ct), atol=1e-6)
    dose = predict_case_dose(load_dose_model(device="cpu"), case)
    assert dose.same_grid(case.ct)
    assert np.all(dose.array[~case.possible_dose_mask.array] == 0)


def test_train_dose_command_logs_resumes_and_starts_from_weights(tmp_path: Path, phantom_dataset: Path,
                                                                  capsys) -> None:
    import csv

    from DoseSegLib.cli.main import main

    data = phantom_dataset
    tiny = ["--data", str(data), "--channels", "4", "8", "16", "--patch", "16", "16", "16", "--val-every", "1",
            "--device", "cpu"]

    def epochs(run: Path) -> list[str]:
        with (run / "log.csv").open() as handle:
            return [row["epoch"] for row in csv.DictReader(handle)]

    run = tmp_path / "run"
    assert main(["train-dose", "--out", str(run), "--epochs", "2", *tiny]) == 0
    assert epochs(run) == ["1", "2"]
    best = torch.load(run / "best.pt", weights_only=True)
    assert np.isfinite(best["meta"]["val_dose_score"]) and best["config"]["strides"] == (2, 2)
    assert main(["train-dose", "--out", str(run), "--epochs", "3", *tiny]) == 0  # resumes from last.pt
    assert epochs(run) == ["1", "2", "3"]
    patient = data / "validation" / "pt_3"
    # a 3-epoch network predicts implausible doses, which predict-dose refuses (test_safety_names): the API here
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.patient import read_patient
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose

    dose = predict_case_dose(load_dose_model(device="cpu", weights=run / "best.pt"), align_case(read_patient(patient)))
    assert dose.same_grid(read_volume(patient / "ct.nrrd"))
    capsys.readouterr()
    assert main(["predict-dose", str(patient), "-o", str(tmp_path / "none"), "--weights", str(run / "no.pt")]) == 1
    assert "no.pt: dose weights not found" in capsys.readouterr().err and not (tmp_path / "none").exists()
    seg_weights = tmp_path / "seg.pt"
    save_weights(seg_weights, SegNet(SegNetConfig(channels=(4, 8, 16), strides=(2, 2))), {"patch": [16] * 3})
    assert main(["predict-dose", str(patient), "-o", str(tmp_path / "none"), "--weights", str(seg_weights)]) == 1
    assert "seg.pt: not a dose network's weights file" in capsys.readouterr().err

    assert main(["train-dose", "--out", str(tmp_path / "next"), "--epochs", "1", "--init", str(run / "best.pt"),
                 "--moment-weight", "0.05", *tiny]) == 0
    capsys.readouterr()
    wider = [*tiny[:2], "--channels", "8", "16", "32", *tiny[6:]]
    assert main(["train-dose", "--out", str(tmp_path / "bad"), "--init", str(run / "best.pt"), *wider]) == 1
    assert "best.pt: its network" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_gpu_out_of_memory_falls_back_to_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA out-of-memory error moves the model to the CPU and the prediction is made there."""
    from DoseSegLib.models.dose import inference as dose_inference

    monkeypatch.setenv("DOSESEG_MODELS", str(_catalogue(tmp_path, DoseNet(TINY))))
    model = load_dose_model(device="cpu")
    model.device = torch.device("cuda")  # as if loaded on a GPU (amp follows the device)
    monkeypatch.setattr(model.net, "to", lambda device: model.net)  # no GPU here to move from
    real = dose_inference.predict_box
    devices_used = []

    def predict_box(net, inputs, roi, device, tta=False, amp=False):
        devices_used.append((device.type, amp))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(net, inputs, roi, device, tta, amp)

    monkeypatch.setattr(dose_inference, "predict_box", predict_box)
    case = _case()
    dose = predict_case_dose(model, case)
    assert devices_used == [("cuda", True), ("cpu", False)] and model.device.type == "cpu"
    assert dose.same_grid(case.ct) and dose.array.max() >= 0


def test_fine_ct_working_grid_covers_the_possible_dose_box_only(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The CT is brought to the model's spacing over the possible-dose box (plus the network's margin) only."""
    from DoseSegLib.models.common.arrays import BOX_MARGIN

    case = _case(shape=(120, 110, 60), spacing=(1.0, 1.0, 1.0))
    region = np.zeros(case.ct.shape, bool)
    region[30:70, 40:80, 10:40] = True
    grid = working_grid(case.ct, region)
    box_lo = case.ct.index_to_lps @ np.array([30, 40, 10, 1.0])
    box_hi = case.ct.index_to_lps @ np.array([69, 79, 39, 1.0])
    grid_lo = grid.index_to_lps @ np.array([0, 0, 0, 1.0])
    grid_hi = grid.index_to_lps @ np.append(np.asarray(grid.shape) - 1, 1.0)
    margin = BOX_MARGIN * np.asarray(grid.spacing)
    assert np.all(grid_lo[:3] <= box_lo[:3] - margin) and np.all(grid_hi[:3] >= box_hi[:3] + margin)
    assert np.prod(grid.shape) < np.prod(working_grid(case.ct).shape) / 2
