"""The feature autoencoder: MONAI residual convolutions down to a small latent vector and back.

``encode`` gives the latent features of a batch; ``forward`` the reconstruction.
No dropout: in eval mode the same input always gives the same features.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common.net_config import StoredConfig


@dataclass
class FeatureNetConfig(StoredConfig):
    """Architecture of the autoencoder (stored with its weights).

    Attributes:
        channels: feature maps after each stride-2 stage of the encoder (mirrored by the decoder).
        latent: length of the feature vector.
    """

    in_channels: int = 7
    grid: tuple[int, int, int] = (64, 64, 64)
    channels: tuple[int, ...] = (16, 32, 64, 64)
    latent: int = 16

    @property
    def bottleneck(self) -> tuple[int, int, int, int]:
        """Shape (channels, x, y, z) of the last encoder map."""
        factor = 2 ** len(self.channels)
        if any(g % factor for g in self.grid):
            raise DoseSegError(f"grid {self.grid} must be a multiple of {factor} on each axis "
                               f"({len(self.channels)} stride-2 stages)")
        return (self.channels[-1], *(g // factor for g in self.grid))


def _down(in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.blocks import ResidualUnit

    return ResidualUnit(3, in_channels, out_channels, strides=2, subunits=2, norm="instance", act="PRELU")


def _up(in_channels: int, out_channels: int, last: bool) -> nn.Module:
    from monai.networks.blocks import Convolution

    return Convolution(3, in_channels, out_channels, strides=2, kernel_size=3, is_transposed=True,
                       norm="instance", act="PRELU", conv_only=last)


class FeatureNet(nn.Module):
    """3D convolutional autoencoder with a linear bottleneck of ``config.latent`` features."""

    def __init__(self, config: FeatureNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or FeatureNetConfig()
        widths = (self.config.in_channels, *self.config.channels)
        self.encoder = nn.Sequential(*(_down(a, b) for a, b in itertools.pairwise(widths)))
        size = int(torch.tensor(self.config.bottleneck).prod())
        self.to_latent = nn.Linear(size, self.config.latent)
        self.from_latent = nn.Linear(self.config.latent, size)
        backwards = widths[::-1]
        self.decoder = nn.Sequential(*(_up(a, b, last=i == len(backwards) - 2)
                                       for i, (a, b) in enumerate(itertools.pairwise(backwards))))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent features ``(batch, latent)``."""
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(batch, in_channels, *grid)`` from latent features."""
        return self.decoder(self.from_latent(z).view(-1, *self.config.bottleneck))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
