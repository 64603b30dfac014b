"""Segmentation losses: BCE + soft Dice, and DOSELO's differentiable dose term through a frozen dose network.

Both losses take the network's logits and a batch dict ("labels", "present" and, for
DOSELO, "dose_inputs") and return a dict of terms whose "loss" entry is minimised.
Labels a patient lacks ("present" False: not contoured) are not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import SegLoss
from DoseSegLib.models.common import distributed
from DoseSegLib.models.dose.inputs import CHANNELS
from DoseSegLib.models.dose.net import DoseNet


class BceDiceLoss(nn.Module):
    """BCE + soft Dice (MONAI DiceLoss on sigmoid outputs), per label, averaged over present labels.

    The average is over the (patient, label) pairs present in the global batch (all ranks under torchrun).
    """

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        # smoothing of one voxel: a label absent from a patch costs little for a few false-positive voxels
        self.dice = DiceLoss(sigmoid=True, reduction="none", smooth_nr=1.0, smooth_dr=1.0)

    def forward(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=(2, 3, 4))
        dice = self.dice(logits, labels).reshape(bce.shape)
        weight = batch["present"].to(bce.dtype)
        seg = ((bce + dice) * weight).sum() / distributed.mean_count(weight.sum()).clamp(min=1)
        return {"loss": seg, "seg": seg}


class DoseTerm(nn.Module):
    """MSE (Gy^2) between the frozen dose network's predictions from predicted and from true OAR masks.

    The dose network sees the true CT, target, proximity and possible-dose channels on
    both sides; the OAR channels of the labels are the soft probabilities on one side
    and the true masks on the other. Its parameters never receive gradients, but the
    probabilities do (no threshold, no ``no_grad`` on the predicted path).

    Args:
        dose_net: the dose network; frozen here (``requires_grad=False``, eval mode).
        labels: the segmenter's label names, all of them OARs the dose network knows.
    """

    def __init__(self, dose_net: DoseNet, labels: Sequence[str]) -> None:
        super().__init__()
        unknown = [n for n in labels if n not in OARS]
        if unknown:
            raise DoseSegError(f"the DOSELO loss needs labels among the dose network's OARs; not: {unknown}")
        self.dose_net = dose_net.eval()
        for parameter in self.dose_net.parameters():
            parameter.requires_grad_(False)
        self.label_of_channel = {CHANNELS.index(name): i for i, name in enumerate(labels)}

    def train(self, mode: bool = True) -> DoseTerm:
        super().train(mode)
        self.dose_net.eval()
        return self

    def _dose_input(self, dose_inputs: torch.Tensor, oars: torch.Tensor) -> torch.Tensor:
        """The dose inputs with the label channels taken from ``oars``."""
        channels = [
            oars[:, self.label_of_channel[c]: self.label_of_channel[c] + 1] if c in self.label_of_channel
            else dose_inputs[:, c: c + 1]
            for c in range(dose_inputs.shape[1])
        ]
        return torch.cat(channels, dim=1)

    def forward(self, probabilities: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels, dose_inputs = batch["labels"], batch["dose_inputs"]
        present = batch["present"][:, :, None, None, None]
        with torch.no_grad():
            reference = self.dose_net.predict(self._dose_input(dose_inputs, labels))
        predicted = self.dose_net.predict(self._dose_input(dose_inputs, torch.where(present, probabilities, labels)))
        return F.mse_loss(predicted, reference)


class DoseloLoss(nn.Module):
    """BCE + soft Dice + ``weight`` * :class:`DoseTerm`."""

    def __init__(self, dose_net: DoseNet, labels: Sequence[str], weight: float = 1.0) -> None:
        super().__init__()
        self.seg = BceDiceLoss()
        self.dose = DoseTerm(dose_net, labels)
        self.weight = weight

    def forward(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seg = self.seg(logits, batch)["seg"]
        dose = self.dose(torch.sigmoid(logits), batch)
        return {"loss": seg + self.weight * dose, "seg": seg, "dose": dose}


def load_frozen_dose_net(name: str | None = None, weights: Path | None = None) -> DoseNet:
    """The dose network from a weights file (a train-dose best.pt) or the catalogue, on the CPU.

    Args:
        name: catalogue model name (default: the catalogue's default dose model).
        weights: a best.pt written by ``doseseg train-dose``; read with weights_only=True.
    """
    from DoseSegLib.models.dose.predict import load_dose_model

    return load_dose_model(name, "cpu", weights).net


def make_loss(kind: SegLoss | str, labels: Sequence[str], dose_net: DoseNet | None = None,
              weight: float = 1.0) -> nn.Module:
    """The loss named ``kind``; DOSELO needs ``dose_net``."""
    if SegLoss.parse(kind) == SegLoss.BCE_DICE:
        return BceDiceLoss()
    if dose_net is None:
        raise ValueError("the DOSELO loss needs the dose network")
    return DoseloLoss(dose_net, labels, weight)
