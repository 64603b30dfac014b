"""The one shape of a loaded model: its network on a device, and where its weights came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device
from DoseSegLib.models.common.catalogue import ModelEntry, load_network
from DoseSegLib.models.common.net_config import StoredConfig

if TYPE_CHECKING:
    from typing import Self

    import torch


@dataclass
class ModelHandle:
    """A network in eval mode on ``device``; each task's handle adds what its inference needs.

    Attributes:
        entry: the catalogue row (weights sha256-checked), or None for a user's weights file.
    """

    TASK: ClassVar[str] = ""

    net: torch.nn.Module
    device: torch.device
    entry: ModelEntry | None

    @property
    def amp(self) -> bool:
        """Mixed precision: on CUDA only."""
        return self.device.type == "cuda"

    @staticmethod
    def network_classes() -> tuple[type[torch.nn.Module], type[StoredConfig]]:
        """The task's network class and its config class (imported lazily: they need torch)."""
        raise NotImplementedError

    @staticmethod
    def from_meta(meta: dict) -> dict:
        """The handle's own fields from a weights file's metadata (KeyError when one is missing)."""
        return {}

    @classmethod
    def load(cls, name: str | None = None, device: Device | str = Device.AUTO,
             weights: Path | None = None) -> Self:
        """Load the task's network onto ``device``, in eval mode.

        Args:
            name: catalogue model name (default: the catalogue's default model of the task); its
                sha256 is verified before loading with weights_only=True.
            device: "auto", "cpu" or "cuda".
            weights: a training run's best.pt to load instead (weights_only, no checksum: the file is the
                user's own).
        """
        network, config = cls.network_classes()
        net, meta, entry, torch_device = load_network(cls.TASK, network, config, name, weights, device)
        try:
            fields = cls.from_meta(meta)
        except KeyError as exc:
            source = weights or (entry.file if entry else "")
            raise DoseSegError(f"{source}: no {exc} in its metadata; not a {cls.TASK} "
                               "training run's best.pt") from exc
        return cls(net=net, device=torch_device, entry=entry, **fields)
