"""The segmentation network: a residual MONAI U-Net with InstanceNorm and squeeze-and-excitation.

One sigmoid output per label (multi-label: structures may overlap); ``forward``
gives logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from DoseSegLib.models.common.net_config import NetConfig


@dataclass
class SegNetConfig(NetConfig):
    """Architecture of the segmentation network (stored with its weights)."""

    in_channels: int = 1
    out_channels: int = 7
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    squeeze_excitation: bool = True
    dropout: float = 0.1


def _se_unet(config: SegNetConfig) -> nn.Module:
    """A MONAI UNet whose encoder blocks (and bottleneck) end with a channel SE layer."""
    from monai.networks.blocks import ChannelSELayer
    from monai.networks.nets import UNet

    class SEUNet(UNet):
        def _get_down_layer(self, in_channels: int, out_channels: int, strides: int, is_top: bool) -> nn.Module:
            block = super()._get_down_layer(in_channels, out_channels, strides, is_top)
            return nn.Sequential(block, ChannelSELayer(3, out_channels, r=min(4, out_channels)))

    network = SEUNet if config.squeeze_excitation else UNet
    return network(
        spatial_dims=3,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm="instance",
        dropout=config.dropout,
    )


class SegNet(nn.Module):
    """Multi-label 3D segmenter; ``forward`` gives one logit map per label."""

    def __init__(self, config: SegNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SegNetConfig()
        self.unet = _se_unet(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)
