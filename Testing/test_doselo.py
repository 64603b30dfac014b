"""DOSELO: the dose term is differentiable through the frozen dose network, back to the segmenter only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.phantom import write_phantom_patient
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig
from DoseSegLib.models.seg.data import InputSpec, prepare_sample, random_patch
from DoseSegLib.models.seg.losses import DoseloLoss, DoseTerm, load_frozen_dose_net, make_loss
from DoseSegLib.models.seg.net import SegNet, SegNetConfig

TINY = {"channels": (4, 8, 16), "strides": (2, 2)}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """A batch of one 16^3 patch of a small phantom, with the dose network's inputs."""
    folder = tmp_path_factory.mktemp("doselo") / "pt_1"
    write_phantom_patient(folder, shape=(32, 32, 24), spacing=(5.5, 6.5, 4.8))
    sample = prepare_sample(folder, InputSpec(), OARS, dose_inputs=True)
    patch = random_patch(sample, (16, 16, 16), np.random.default_rng(0))
    return {key: value[None] for key, value in patch.items()}


def tiny_nets() -> tuple[SegNet, DoseNet]:
    torch.manual_seed(0)
    return SegNet(SegNetConfig(out_channels=len(OARS), **TINY)), DoseNet(DoseNetConfig(**TINY))


def test_dose_term_gradient_reaches_segmenter_and_not_dose_net(batch: dict[str, torch.Tensor]) -> None:
    segmenter, dose_net = tiny_nets()
    term = DoseTerm(dose_net, OARS)
    term.train()  # the dose network must stay in eval mode
    assert not dose_net.training
    assert all(not p.requires_grad for p in dose_net.parameters())
    value = term(torch.sigmoid(segmenter(batch["image"])), batch)
    assert value.item() > 0
    value.backward()
    gradients = [p.grad for p in segmenter.parameters()]
    assert all(g is not None for g in gradients)
    assert sum(float(g.abs().sum()) for g in gradients) > 0
    assert all(p.grad is None for p in dose_net.parameters())


def test_dose_term_is_zero_for_perfect_masks(batch: dict[str, torch.Tensor]) -> None:
    _, dose_net = tiny_nets()
    assert DoseTerm(dose_net, OARS)(batch["labels"], batch).item() == pytest.approx(0.0, abs=1e-10)


def test_absent_labels_take_the_truth(batch: dict[str, torch.Tensor]) -> None:
    """A structure the patient lacks is not replaced by the prediction, so it gets no gradient."""
    _, dose_net = tiny_nets()
    probabilities = torch.full_like(batch["labels"], 0.5, requires_grad=True)
    absent = {**batch, "present": torch.zeros_like(batch["present"])}
    DoseTerm(dose_net, OARS)(probabilities, absent).backward()
    assert float(probabilities.grad.abs().sum()) == 0.0
    probabilities.grad = None
    DoseTerm(dose_net, OARS)(probabilities, batch).backward()
    assert float(probabilities.grad.abs().sum()) > 0.0


def test_doselo_loss_adds_weighted_dose_term(batch: dict[str, torch.Tensor]) -> None:
    segmenter, dose_net = tiny_nets()
    loss = make_loss("doselo", OARS, dose_net, weight=2.5)
    assert isinstance(loss, DoseloLoss)
    terms = loss(segmenter(batch["image"]), batch)
    assert terms["loss"].item() == pytest.approx(terms["seg"].item() + 2.5 * terms["dose"].item(), rel=1e-5)


def test_doselo_needs_known_oars() -> None:
    _, dose_net = tiny_nets()
    with pytest.raises(DoseSegError, match="GTV"):
        DoseTerm(dose_net, ("Brainstem", "GTV"))
    with pytest.raises(DoseSegError, match="unknown loss"):
        make_loss("dice", OARS)


def test_frozen_dose_net_from_weights_file(tmp_path: Path) -> None:
    _, dose_net = tiny_nets()
    save_weights(tmp_path / "best.pt", dose_net, {"patch": [16, 16, 16]})
    loaded = load_frozen_dose_net(weights=tmp_path / "best.pt")
    assert loaded.config == dose_net.config and not loaded.training
    with pytest.raises(DoseSegError, match="not found"):
        load_frozen_dose_net(weights=tmp_path / "missing.pt")
