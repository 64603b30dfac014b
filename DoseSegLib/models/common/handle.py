"""The one shape of a loaded model: its network on a device, and where its weights came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from DoseSegLib.models.common.catalogue import ModelEntry

if TYPE_CHECKING:
    import torch


@dataclass
class ModelHandle:
    """A network in eval mode on ``device``; each task's handle adds what its inference needs.

    Attributes:
        entry: the catalogue row (weights sha256-checked), or None for a user's weights file.
    """

    net: torch.nn.Module
    device: torch.device
    entry: ModelEntry | None

    @property
    def amp(self) -> bool:
        """Mixed precision: on CUDA only."""
        return self.device.type == "cuda"
