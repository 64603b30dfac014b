"""The dose-prediction network: a residual MONAI U-Net from the dose input channels to Gy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from DoseSegLib.models.common.net_config import NetConfig
from DoseSegLib.models.dose.inputs import CHANNELS

__all__ = ["DoseNet", "DoseNetConfig"]


@dataclass
class DoseNetConfig(NetConfig):
    """Architecture of the dose network (stored with its weights)."""

    in_channels: int = len(CHANNELS)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    dropout: float = 0.1
    dose_scale_gy: float = 70.0


class DoseNet(nn.Module):
    """U-Net on the channels of ``dose_inputs.CHANNELS``; ``forward`` gives raw dose in Gy.

    The last input channel is the possible-dose mask; :meth:`predict` clamps the raw
    output at 0 and zeroes it outside that mask.
    """

    def __init__(self, config: DoseNetConfig | None = None) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.config = config or DoseNetConfig()
        c = self.config
        self.unet = UNet(
            spatial_dims=3,
            in_channels=c.in_channels,
            out_channels=1,
            channels=c.channels,
            strides=c.strides,
            num_res_units=c.num_res_units,
            norm="instance",
            dropout=c.dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x) * self.config.dose_scale_gy

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Dose in Gy: never negative, zero outside the possible-dose mask (last channel)."""
        return torch.relu(self(x)) * (x[:, -1:] > 0.5)
