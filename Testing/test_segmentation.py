"""Segmentation network, thresholds, colours, model loading and the ``segment`` command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from DoseSegLib.cli.main import main
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.colors import OAR_COLORS, structure_color, structure_colors
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_patient, read_segmentation, read_volume
from DoseSegLib.io.phantom import write_phantom_patient
from DoseSegLib.io.tables import read_csv
from DoseSegLib.models.common.catalogue import sha256_of
from DoseSegLib.models.common.mirror import lateral_pairs, mirrored_name
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig
from DoseSegLib.models.seg.augment import SegAugmentation, SegAugmentConfig
from DoseSegLib.models.seg.data import InputSpec
from DoseSegLib.models.seg.inference import THRESHOLDS, overlap_counts, predict_probabilities, tune_thresholds
from DoseSegLib.models.seg.net import SegNet, SegNetConfig
from DoseSegLib.models.seg.predict import load_segmentation_model, segment_case, segment_folder

TINY = {"channels": (4, 8, 16), "strides": (2, 2)}
SMALL_PHANTOM = {"shape": (32, 32, 24), "spacing": (5.5, 6.5, 4.8)}


def tiny_checkpoint(thresholds: dict[str, float], labels=OARS, inputs: InputSpec | None = None) -> dict:
    """An untrained tiny model in the best.pt layout."""
    torch.manual_seed(0)
    inputs = inputs or InputSpec()
    net = SegNet(SegNetConfig(in_channels=inputs.channels, out_channels=len(labels), **TINY))
    meta = {"labels": list(labels), "thresholds": {n: thresholds.get(n, 0.5) for n in labels},
            "inputs": inputs.to_dict(), "patch": [64, 64, 64]}
    return {"state_dict": net.state_dict(), "config": net.config.to_dict(), "meta": meta}


def write_catalogue(folder: Path, checkpoint: dict, sha256: str | None = None) -> None:
    """A one-model segmentation catalogue in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, folder / "seg.pt")
    row = {"name": "tiny-seg", "task": "segmentation", "file": "seg.pt", "version": "0",
           "sha256": sha256 or sha256_of(folder / "seg.pt"), "default": True}
    (folder / "catalogue.json").write_text(json.dumps({"models": [row]}))


@pytest.mark.parametrize("squeeze_excitation", [True, False])
def test_network_output_shapes(squeeze_excitation: bool) -> None:
    torch.manual_seed(0)
    config = SegNetConfig(in_channels=3, out_channels=7, squeeze_excitation=squeeze_excitation, **TINY)
    net = SegNet(config)
    out = net(torch.randn(2, 3, 32, 16, 24))
    assert out.shape == (2, 7, 32, 16, 24)
    has_se = any(type(m).__name__ == "ChannelSELayer" for m in net.modules())
    assert has_se == squeeze_excitation
    assert SegNetConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.size_multiple == 4


def test_colour_table() -> None:
    colors = structure_colors([*OARS, "PTV70", "PTV63", "PTV56", "GTV"])
    assert len(set(colors.values())) == len(colors)
    assert all(0.0 <= c <= 1.0 for color in colors.values() for c in color)
    assert colors["Brainstem"] == OAR_COLORS["Brainstem"]
    assert structure_color("GTV") == structure_color("GTV")


def test_mirror_swaps_left_and_right() -> None:
    assert mirrored_name("RightParotid") == "LeftParotid" and mirrored_name("Cochlea_L") == "Cochlea_R"
    assert mirrored_name("Brainstem") is None
    labels = ("RightParotid", "Brainstem", "LeftParotid")
    assert lateral_pairs(labels) == [(0, 2)]
    image = torch.zeros(1, 8, 4, 4)
    image[0, 0] = 1.0  # patient's right edge
    patch = {"image": image, "labels": torch.stack([image[0], torch.zeros(8, 4, 4), torch.zeros(8, 4, 4)]),
             "present": torch.tensor([True, True, False])}
    mirrored = SegAugmentation(SegAugmentConfig(), labels).mirror(patch)
    assert mirrored["image"][0, -1].all() and not mirrored["image"][0, 0].any()
    assert mirrored["labels"][2, -1].all() and not mirrored["labels"][0].any()
    assert mirrored["present"].tolist() == [False, True, True]


def test_mirror_averaged_probabilities_are_mirror_symmetric() -> None:
    torch.manual_seed(0)
    labels = ("RightParotid", "Brainstem", "LeftParotid")
    net = SegNet(SegNetConfig(in_channels=1, out_channels=3, **TINY)).eval()
    image = np.random.default_rng(0).normal(size=(1, 16, 8, 8)).astype(np.float32)
    mirrored_image = image[:, ::-1].copy()
    plain = predict_probabilities(net, image, (16, 8, 8), torch.device("cpu"))
    averaged = predict_probabilities(net, image, (16, 8, 8), torch.device("cpu"), mirror_labels=labels)
    of_mirror = predict_probabilities(net, mirrored_image, (16, 8, 8), torch.device("cpu"), mirror_labels=labels)
    # the mirrored image's right parotid is the image's left parotid, mirrored
    np.testing.assert_allclose(of_mirror[[2, 1, 0], ::-1], averaged, atol=1e-6)
    assert np.abs(averaged - plain).max() > 1e-4  # the mirror changed the result
    plain_of_mirror = predict_probabilities(net, mirrored_image, (16, 8, 8), torch.device("cpu"))
    np.testing.assert_allclose((plain + plain_of_mirror[[2, 1, 0], ::-1]) / 2, averaged, atol=1e-6)


def test_thresholds_tuned_per_label() -> None:
    truth = np.zeros((2, 10, 10, 10), bool)
    truth[:, 2:6] = True
    probabilities = np.where(truth, 0.8, 0.1).astype(np.float32)
    probabilities[1, 6:8] = 0.5  # label 1: voxels at 0.5 outside the truth, need a threshold above 0.5
    counts = [overlap_counts(probabilities, truth)]
    thresholds, dice = tune_thresholds(counts, [np.array([True, True])])
    assert 0.1 < thresholds[0] <= 0.8 and 0.5 < thresholds[1] <= 0.8
    np.testing.assert_allclose(dice, [1.0, 1.0])
    thresholds, dice = tune_thresholds(counts, [np.array([True, False])])
    assert thresholds[1] == 0.5 and np.isnan(dice[1])
    assert len(THRESHOLDS) == 19


def test_thresholds_tuned_on_the_largest_region_ignore_stray_islands() -> None:
    truth = np.zeros((1, 12, 12, 12), bool)
    truth[0, 2:6, 2:6, 2:6] = True
    probabilities = np.where(truth, 0.6, 0.0).astype(np.float32)
    probabilities[0, 9:11, 9:11, 9:11] = 0.9  # a small, confident island away from the organ
    probabilities[0, 2:6, 2:6, 6] = 0.3  # a faint rim beside it, outside the truth
    present = [np.array([True])]
    raw_thresholds, raw_dice = tune_thresholds([overlap_counts(probabilities, truth)], present)
    thresholds, dice = tune_thresholds([overlap_counts(probabilities, truth, [True])], present)
    assert raw_thresholds[0] > 0.3 and raw_dice[0] < 0.95  # no threshold removes the island alone
    assert 0.3 < thresholds[0] <= 0.6 and dice[0] == pytest.approx(1.0)


def test_checksum_mismatch_refuses_to_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalogue(tmp_path / "models", tiny_checkpoint({}), sha256="0" * 64)
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    with pytest.raises(DoseSegError, match="sha256"):
        load_segmentation_model(device="cpu")


def test_segment_case_masks_on_ct_grid(phantom_case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalogue(tmp_path / "models", tiny_checkpoint({"Brainstem": 0.0, "Larynx": 1.01}))
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    model = load_segmentation_model(device="cpu")
    assert model.entry.name == "tiny-seg" and model.labels == OARS
    masks = segment_case(model, phantom_case)
    assert list(masks) == list(OARS)
    assert all(m.same_grid(phantom_case.ct) and m.array.dtype == bool for m in masks.values())
    assert masks["Brainstem"].array.any() and not masks["Larynx"].array.any()


def test_segment_command_writes_seg_nrrd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalogue(tmp_path / "models", tiny_checkpoint({"Brainstem": 0.0, "Mandible": 0.0, "Larynx": 1.01}))
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    patient = tmp_path / "pt_7"
    write_phantom_patient(patient, **SMALL_PHANTOM)
    (patient / "structures").rename(tmp_path / "unused")  # a new patient: CT only
    out = tmp_path / "out"
    assert main(["segment", str(patient), "-o", str(out), "--device", "cpu"]) == 0
    ct = read_volume(patient / "ct.nrrd")
    segments = read_segmentation(out / "pt_7" / "segmentation.seg.nrrd")
    assert "Brainstem" in segments and "Mandible" in segments and "Larynx" not in segments
    assert all(m.same_grid(ct) for m in segments.values())
    import slicerio

    colours = {s["name"]: s["color"] for s in slicerio.read_segmentation(
        str(out / "pt_7" / "segmentation.seg.nrrd"), skip_voxels=True)["segments"]}
    np.testing.assert_allclose(colours["Brainstem"], structure_color("Brainstem"), atol=1e-3)
    files = sorted(p.name for p in (out / "pt_7" / "structures").iterdir())
    assert files == sorted(f"{n}.nrrd" for n in segments)
    assert read_volume(out / "pt_7" / "structures" / "Mandible.nrrd").same_grid(ct)
    assert main(["segment", str(patient), "-o", str(tmp_path / "tta"), "--device", "cpu", "--tta"]) == 0
    assert read_segmentation(tmp_path / "tta" / "pt_7" / "segmentation.seg.nrrd").keys() == segments.keys()


def add_tiny_dose_model(folder: Path) -> None:
    """Append an untrained tiny dose model to the catalogue in ``folder``."""
    torch.manual_seed(0)
    save_weights(folder / "dose.pt", DoseNet(DoseNetConfig(**TINY)), {"patch": [32, 32, 32]})
    catalogue = json.loads((folder / "catalogue.json").read_text())
    catalogue["models"].append({"name": "tiny-dose", "task": "dose", "file": "dose.pt", "version": "0",
                                "sha256": sha256_of(folder / "dose.pt")})
    (folder / "catalogue.json").write_text(json.dumps(catalogue))


def test_evaluate_seg_dice_hd95_rmae(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalogue(tmp_path / "models", tiny_checkpoint({"Brainstem": 0.0, "Larynx": 1.01}))
    add_tiny_dose_model(tmp_path / "models")
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    write_phantom_patient(tmp_path / "reference" / "pt_7", **SMALL_PHANTOM)
    predictions, out = tmp_path / "predictions", tmp_path / "evaluation"
    assert main(["segment", str(tmp_path / "reference" / "pt_7"), "-o", str(predictions), "--device", "cpu"]) == 0
    assert main(["evaluate-seg", str(predictions), "--reference", str(tmp_path / "reference"),
                 "-o", str(out), "--device", "cpu"]) == 0
    rows = {r["structure"]: r for r in read_csv(out / "per_structure.csv")}
    assert set(rows) == {*OARS, "possible_dose_mask"}
    assert float(rows["Larynx"]["dice"]) == 0.0 and rows["Larynx"]["hd95_mm"] == "inf"
    assert 0.0 < float(rows["Brainstem"]["dice"]) < 1.0 and float(rows["Brainstem"]["hd95_mm"]) > 0
    assert float(rows["possible_dose_mask"]["rmae"]) >= 0.0
    summary = read_csv(out / "summary.csv")
    assert summary[-1]["structure"] == "mean" and float(summary[-1]["dice"]) < 1.0
    assert {r["structure"]: r for r in summary}["Larynx"]["missed"] == "1"


def test_real_patient_smoke(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalogue(tmp_path / "models", tiny_checkpoint({}))
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    model = load_segmentation_model(device="cpu")
    folder = shared_data / "openkbp" / "validation" / "pt_201"
    started = time.monotonic()
    masks = segment_folder(model, folder)
    assert time.monotonic() - started < 30
    ct = read_patient(folder).ct
    assert set(masks) == set(OARS)
    assert all(m.same_grid(ct) and m.shape == (128, 128, 128) for m in masks.values())


def fine_body_case() -> Case:
    """A 1 mm CT of an elliptic body (water in air), the body as possible-dose mask."""
    shape = (110, 100, 90)
    i, j, _ = np.indices(shape)
    body = ((i - 55) / 50.0) ** 2 + ((j - 50) / 45.0) ** 2 < 1
    ct = Volume(np.where(body, 0, -1000).astype(np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    return Case("fine", ct, {}, None, ct.with_array(body))


def test_fine_ct_is_segmented_at_the_model_spacing_with_smooth_edges(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 mm CT: the model sees its own spacing; its probabilities (a 20 mm ball) are thresholded on the CT grid."""
    from DoseSegLib.models.common.grid import WORKING_SPACING
    from DoseSegLib.models.seg import inference

    write_catalogue(tmp_path / "models", tiny_checkpoint({}))
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    model = load_segmentation_model(device="cpu")
    case = fine_body_case()
    ct, shape, spacing = case.ct, case.ct.shape, case.ct.spacing
    seen = []

    def ball(net, image, roi, device, amp=False, mirror_labels=None):
        seen.append(image.shape[1:])
        centre = (np.asarray(image.shape[1:]) - 1) / 2
        index = np.indices(image.shape[1:]).transpose(1, 2, 3, 0)
        radius = np.linalg.norm((index - centre) * np.asarray(WORKING_SPACING), axis=-1)
        return np.repeat(np.clip(0.5 + (20.0 - radius) / 8.0, 0, 1)[None], len(model.labels), axis=0).astype(np.float32)

    monkeypatch.setattr(inference, "predict_probabilities", ball)
    mask = segment_case(model, case)["Brainstem"]
    assert mask.same_grid(ct) and seen and np.prod(seen[0]) < np.prod(shape) / 10
    points = np.argwhere(mask.array) * np.asarray(spacing)
    centre = points.mean(axis=0)
    sphere = np.linalg.norm(np.indices(shape).transpose(1, 2, 3, 0) * np.asarray(spacing) - centre, axis=-1) <= 20.0
    dice = 2 * np.count_nonzero(sphere & mask.array) / (np.count_nonzero(sphere) + np.count_nonzero(mask.array))
    assert dice > 0.98  # labels thresholded on the 3.9 mm grid first: blocky edges, Dice 0.955


def test_fine_ct_keeps_a_thin_organ_cut_at_a_high_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cord one model voxel wide (p 0.99, its neighbours 0.6), cut at 0.95: on a 1 mm CT it stays one model
    voxel wide and whole, as on the model's grid; the interpolated probabilities cut at 0.95 kept a sliver."""
    from DoseSegLib.models.common.grid import WORKING_SPACING
    from DoseSegLib.models.seg import inference

    write_catalogue(tmp_path / "models", tiny_checkpoint({"SpinalCord": 0.95}))
    monkeypatch.setenv("DOSESEG_MODELS", str(tmp_path / "models"))
    model = load_segmentation_model(device="cpu")

    def cord(net, image, roi, device, amp=False, mirror_labels=None):
        x, y = (n // 2 for n in image.shape[1:3])
        p = np.zeros(image.shape[1:], np.float32)
        p[x - 1:x + 2, y, 2:-2] = p[x, y - 1:y + 2, 2:-2] = 0.6
        p[x, y, 2:-2] = 0.99
        return np.repeat(p[None], len(model.labels), axis=0)

    monkeypatch.setattr(inference, "predict_probabilities", cord)
    mask = segment_case(model, fine_body_case())["SpinalCord"].array
    slices = np.flatnonzero(mask.any(axis=(0, 1)))
    areas = mask.sum(axis=(0, 1))[slices[5:-5]]  # mm^2 per 1 mm slice, away from the ends
    assert slices.size > 0.8 * mask.shape[2] and np.all(np.diff(slices) == 1)
    assert np.all((areas > 0.6 * WORKING_SPACING[0] ** 2) & (areas < 1.6 * WORKING_SPACING[0] ** 2)), areas
