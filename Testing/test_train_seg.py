"""``doseseg train-seg`` on a tiny synthetic two-input dataset (CT + PET), both losses, resume."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from DoseSegLib.cli.main import main
from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import write_volume
from DoseSegLib.io.phantom import write_phantom_patient
from DoseSegLib.models.common.patient_cache import load_arrays
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig
from DoseSegLib.models.seg.data import InputSpec, balanced_label_weights, build_cache, random_patch, read_inputs
from DoseSegLib.models.seg.losses import make_loss
from DoseSegLib.models.seg.net import SegNet, SegNetConfig

REPO = Path(__file__).resolve().parents[1]
TINY = ["--channels", "4", "8", "16", "--patch", "16", "16", "16", "--batch-size", "2", "--workers", "1"]


def write_pet(folder: Path, ct: Volume, hot: np.ndarray, seed: int) -> None:
    """A PET-like image of the tumour on a grid twice as coarse as the CT's."""
    rng = np.random.default_rng(seed)
    uptake = (1.0 + 6.0 * hot + rng.normal(0, 0.1, hot.shape)).astype(np.float32)[::2, ::2, ::2]
    write_volume(folder / "pet.nrrd", Volume(uptake, tuple(2 * s for s in ct.spacing), ct.origin))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ (3 patients) and validation/ (2 patients): 32x32x24 phantoms with ct.nrrd and pet.nrrd."""
    root = tmp_path_factory.mktemp("segdata")
    for split, seeds in (("train", (1, 2, 3)), ("validation", (4, 5))):
        for seed in seeds:
            folder = root / split / f"pt_{seed}"
            case = write_phantom_patient(folder, shape=(32, 32, 24), spacing=(5.5, 6.5, 4.8), seed=seed)
            write_pet(folder, case.ct, case.structures["PTV70"].array, seed)
    return root


def log_rows(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_inputs_resampled_onto_first_image(dataset: Path) -> None:
    case, images = read_inputs(dataset / "train" / "pt_1", InputSpec(("ct.nrrd", "pet.nrrd")))
    assert images[0] is case.ct and images[1].same_grid(case.ct)
    hot = case.structures["PTV70"].array
    assert images[1].array[hot].mean() > 3 * images[1].array[~hot].mean()


def test_random_patch_pads_and_prefers_foreground() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 40, 12, 30), np.uint8)
    labels[1, 35:38, 5:7, 20:22] = 1
    sample = {"image": np.linspace(-1, 1, 40 * 12 * 30, dtype=np.float16).reshape(1, 40, 12, 30), "labels": labels,
              "present": np.array([False, True])}
    patch = random_patch(sample, (16, 16, 16), rng, foreground=1.0)
    assert patch["image"].shape == (1, 16, 16, 16) and patch["labels"].shape == (2, 16, 16, 16)
    assert patch["labels"][1].sum() == 12 and patch["image"][0, :, 12:].eq(-1).all()
    assert patch["present"].tolist() == [False, True]
    hits = sum(bool(random_patch(sample, (16, 16, 16), rng)["labels"].any()) for _ in range(30))
    assert hits < 30


def test_truncated_patch_is_padded_above_a_random_plane() -> None:
    labels = np.ones((1, 20, 20, 40), np.uint8)
    image = np.linspace(-0.5, 1, 20 * 20 * 40, dtype=np.float16).reshape(1, 20, 20, 40)
    sample = {"image": image, "labels": labels, "present": np.array([True])}
    rng = np.random.default_rng(3)
    heights = set()
    for _ in range(20):
        patch = random_patch(sample, (16, 16, 16), rng, truncate=1.0)
        kept = int(patch["labels"][0, 0, 0].sum())  # label voxels left on one z column
        heights.add(kept)
        assert 4 <= kept < 16 and patch["labels"][:, :, :, :kept].all() and not patch["labels"][:, :, :, kept:].any()
        assert patch["image"][0, :, :, kept:].eq(-0.5).all()  # the channel minimum, as beyond the scan
        assert patch["image"][0, :, :, :kept].gt(-0.5).any()
    assert len(heights) > 3
    assert random_patch(sample, (16, 16, 16), rng)["labels"].all()  # truncate=0: never cut


@pytest.mark.parametrize("option", ["--truncate", "--foreground"])
def test_shares_outside_0_to_1_are_refused(option: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train-seg", "--data", str(tmp_path), "--out", str(tmp_path / "run"), option, "15"])
    assert f"argument {option}: expected a share between 0 and 1, got '15'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_balanced_sampling_centres_rare_labels_as_often_as_common_ones() -> None:
    labels = np.zeros((2, 60, 20, 20), np.uint8)
    labels[0, 2:6, 8:12, 8:12] = 1  # common structure, far from the rare one
    labels[1, 54:58, 8:12, 8:12] = 1  # rare structure
    common = {"present": np.array([True, False])}
    weights = balanced_label_weights([{"present": np.array([True, True])}, *[common] * 3])
    assert weights.tolist() == [0.25, 1.0]
    sample = {"image": np.zeros((1, 60, 20, 20), np.float16), "labels": labels, "present": np.array([True, True])}

    def rare_share(label_weights) -> float:
        rng = np.random.default_rng(1)
        patches = [random_patch(sample, (16, 16, 16), rng, 1.0, label_weights) for _ in range(200)]
        return np.mean([bool(p["labels"][1].any()) for p in patches])

    assert rare_share(None) == pytest.approx(0.5, abs=0.1)
    assert rare_share(weights) == pytest.approx(0.8, abs=0.1)


@pytest.mark.parametrize("loss", ["bce_dice", "doselo"])
def test_training_steps_decrease_the_loss(dataset: Path, tmp_path: Path, loss: str) -> None:
    torch.manual_seed(0)
    doselo = loss == "doselo"
    files = build_cache([dataset / "train" / "pt_1"], tmp_path, InputSpec(), OARS, doselo, workers=1)
    patch = random_patch(load_arrays(files[0]), (16, 16, 16), np.random.default_rng(0))
    batch = {key: value[None] for key, value in patch.items()}
    net = SegNet(SegNetConfig(out_channels=len(OARS), channels=(4, 8, 16), strides=(2, 2), dropout=0.0))
    dose_net = DoseNet(DoseNetConfig(channels=(4, 8, 16), strides=(2, 2))) if doselo else None
    loss_fn = make_loss(loss, OARS, dose_net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        terms = loss_fn(net(batch["image"]), batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.8 * losses[0]


def test_train_seg_two_inputs_any_labels_and_resume(dataset: Path, tmp_path: Path, capsys, caplog) -> None:
    run = tmp_path / "run"
    args = ["train-seg", "--data", str(dataset), "--out", str(run), "--inputs", "ct.nrrd,pet.nrrd",
            "--labels", "Mandible,PTV70", "--ct-windows=-1024:1024,-160:240", "--val-every", "1",
            "--reset-labels", "PTV70", *TINY]
    assert main([*args, "--epochs", "2"]) == 0
    assert "PTV70: output bias moved" in caplog.text
    caplog.clear()
    best = torch.load(run / "best.pt", weights_only=True)
    meta = best["meta"]
    assert meta["labels"] == ["Mandible", "PTV70"] and set(meta["thresholds"]) == {"Mandible", "PTV70"}
    assert meta["inputs"] == {"images": ["ct.nrrd", "pet.nrrd"], "ct_windows": [[-1024.0, 1024.0], [-160.0, 240.0]]}
    assert best["config"]["in_channels"] == 3 and best["config"]["out_channels"] == 2
    rows = log_rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and np.isfinite(float(rows[0]["val_dice"]))
    assert {"dice_Mandible", "dice_PTV70"} <= set(rows[0])
    assert main([*args, "--epochs", "3"]) == 0  # resumes from last.pt: one more epoch, no second bias reset
    assert [r["epoch"] for r in log_rows(run)] == ["1", "2", "3"]
    assert "best val_dice" in capsys.readouterr().out and "output bias moved" not in caplog.text


def test_train_seg_doselo(dataset: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_weights(tmp_path / "dose.pt", DoseNet(DoseNetConfig(channels=(4, 8, 16), strides=(2, 2))), {"patch": [16] * 3})
    run = tmp_path / "run"
    args = ["train-seg", "--data", str(dataset), "--out", str(run), "--loss", "doselo", "--lambda", "0.5",
            "--dose-weights", str(tmp_path / "dose.pt"), "--epochs", "1", "--max-train-patients", "2",
            "--max-val-patients", "1", *TINY]
    assert main(args) == 0
    row = log_rows(run)[0]
    assert float(row["train_dose"]) > 0
    assert torch.load(run / "best.pt", weights_only=True)["meta"]["loss"] == "doselo"


def test_train_seg_refuses_bad_options(dataset: Path, tmp_path: Path, capsys) -> None:
    save_weights(tmp_path / "dose.pt", DoseNet(DoseNetConfig(channels=(4, 8, 16), strides=(2, 2))), {"patch": [16] * 3})
    common = ["train-seg", "--data", str(dataset), "--out", str(tmp_path / "run"), "--channels", "4", "8", "16"]
    assert main([*common, "--loss", "doselo", "--labels", "PTV70", "--dose-weights", str(tmp_path / "dose.pt"),
                 "--patch", "16", "16", "16"]) == 1
    assert "OARs" in capsys.readouterr().err
    assert main([*common, "--patch", "16", "16", "18"]) == 1
    assert "multiple of 4" in capsys.readouterr().err


def test_reset_labels_revives_a_saturated_output(dataset: Path, tmp_path: Path) -> None:
    """--reset-labels moves the label's final bias so its mean logit is its prior log-odds."""
    import math

    from DoseSegLib.models.seg.training import SegTrainConfig, reset_output_bias

    labels = ("Mandible", "PTV70")
    config = SegTrainConfig(labels=labels, reset_labels=("PTV70",), patch=(16, 16, 16),
                            net=SegNetConfig(in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2)))
    cached = build_cache(sorted((dataset / "train").iterdir()), tmp_path / "cache", config.inputs, labels, False, 1)
    samples = [load_arrays(f) for f in cached]
    torch.manual_seed(0)
    net = SegNet(config.net)
    final = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        final.bias[1] -= 30.0  # a "never" output, as the Esophagus one of the first bundled model
    mandible_bias = final.bias[0].item()
    reset_output_bias(net, samples, config, torch.device("cpu"))
    assert final.bias[0].item() == mandible_bias
    rng = np.random.default_rng(config.seed)
    patches = [random_patch(s, config.patch, rng, 1.0, np.eye(2)[1]) for s in samples if s["present"][1]][:4]
    with torch.no_grad():
        logits = net(torch.stack([p["image"] for p in patches]))[:, 1]
    share = float(torch.stack([p["labels"][1] for p in patches]).mean())
    assert float(logits.mean()) == pytest.approx(math.log(share / (1 - share)), abs=0.3)
    with pytest.raises(DoseSegError, match="not among the labels"):
        reset_output_bias(net, samples, replace(config, reset_labels=("Larynx",)), torch.device("cpu"))


def test_averaged_epochs_are_scored_and_saved_with_tuned_thresholds(dataset: Path, tmp_path: Path, capsys,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/average_seg_weights.py: the mean of two runs' weights, validated like a training epoch."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("average_seg_weights", REPO / "scripts" / "average_seg_weights.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run = tmp_path / "run"
    assert main(["train-seg", "--data", str(dataset), "--out", str(run), "--epochs", "1", *TINY]) == 0
    best = torch.load(run / "best.pt", weights_only=True)
    other = {k: v + 1.0 if v.is_floating_point() else v for k, v in best["state_dict"].items()}
    torch.save({"model": other, "optimizer": {}, "state": {}}, tmp_path / "last.pt")
    averaged = script.average([run / "best.pt", tmp_path / "last.pt"])
    name = next(k for k, v in other.items() if v.is_floating_point())
    torch.testing.assert_close(averaged[name], best["state_dict"][name] + 0.5)

    out = tmp_path / "averaged.pt"
    monkeypatch.setattr(sys, "argv", ["average_seg_weights.py", str(run / "best.pt"), str(tmp_path / "last.pt"),
                                      "--like", str(run / "best.pt"), "--data", str(dataset),
                                      "--cache", str(run / "cache"), "-o", str(out)])
    script.main()
    result = torch.load(out, weights_only=True)
    assert result["config"] == best["config"] and set(result["meta"]["thresholds"]) == set(OARS)
    assert np.isfinite(result["meta"]["val_dice"]) and "average of best.pt, last.pt" == result["meta"]["epoch"]
    assert "mean validation Dice" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # never overwrites
        script.main()
