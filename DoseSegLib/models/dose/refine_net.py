"""The dose refiner: a small residual MONAI U-Net that corrects the base dose model's prediction.

Its input is the base prediction (Gy / 70) followed by the dose network's own input channels
(CT, targets, target proximity, OARs, possible-dose mask last). It works at a coarser grid
(the input average-pooled by ``pool``, the correction upsampled back trilinearly), which keeps
it within a fraction of a second per patient on the CPU. Its output is a correction in Gy (a few
Gy at initialisation, through a learnt gain that starts at 0.1), added to the base prediction;
with a zero gain the refiner returns the base dose unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from DoseSegLib.models.common.arrays import pad_to
from DoseSegLib.models.common.net_config import NetConfig
from DoseSegLib.models.dose.inputs import CHANNELS, REFERENCE_GY


@dataclass
class RefineNetConfig(NetConfig):
    """Architecture of the refiner (stored with its weights)."""

    in_channels: int = len(CHANNELS) + 1
    channels: tuple[int, ...] = (24, 48, 96, 192)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    pool: int = 2
    correction_gy: float = 10.0

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (the pooling, then the U-Net's strides)."""
        return self.pool * super().size_multiple


def refine_inputs(first: np.ndarray | torch.Tensor, inputs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Refiner input ``(1 + len(CHANNELS), ...)``: the base dose / 70 Gy, then the dose channels.

    ``first`` is ``(X, Y, Z)`` or ``(B, 1, X, Y, Z)``; ``inputs`` channels-first, batched likewise.
    """
    if isinstance(first, torch.Tensor):
        return torch.cat([first / REFERENCE_GY, cast(torch.Tensor, inputs)], dim=-4)  # tensors, as ``first``
    return np.concatenate([(first / REFERENCE_GY)[None], inputs]).astype(np.float32)


class RefineNet(nn.Module):
    """``forward`` gives the refined dose (Gy), >= 0 and zero outside the possible-dose mask (last channel)."""

    def __init__(self, config: RefineNetConfig | None = None) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.config = config or RefineNetConfig()
        c = self.config
        self.unet = UNet(spatial_dims=3, in_channels=c.in_channels, out_channels=1, channels=c.channels,
                         strides=c.strides, num_res_units=c.num_res_units, norm="instance")
        self.gain = nn.Parameter(torch.full((1,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:, :1] * REFERENCE_GY
        pool = self.config.pool
        coarse = self.unet(F.avg_pool3d(x, pool) if pool > 1 else x)
        if pool > 1:
            coarse = F.interpolate(coarse, size=x.shape[2:], mode="trilinear", align_corners=False)
        correction = coarse * (self.gain * self.config.correction_gy)
        return torch.relu(first + correction) * (x[:, -1:] > 0.5)


@torch.inference_mode()
def refine_box(net: RefineNet, first: np.ndarray, inputs: np.ndarray, device: torch.device) -> np.ndarray:
    """Refined dose (Gy) of one box from the base dose ``first`` and the dose ``inputs`` on that box.

    One pass over the whole box (padded to the size multiple): at the refiner's coarse grid a
    head-and-neck box fits easily, and no sliding-window blending is needed.
    """
    shape = tuple(-(-n // net.config.size_multiple) * net.config.size_multiple for n in first.shape)
    padded, region = pad_to(inputs.astype(np.float32), shape)
    base = np.zeros(shape, np.float32)
    base[region] = first
    dose = net(torch.from_numpy(refine_inputs(base, padded))[None].to(device))
    return dose[0, 0].float().cpu().numpy()[region]
