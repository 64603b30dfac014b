"""What every network configuration shares: storage with the weights and the size rule."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, ClassVar, TypeVar

Config = TypeVar("Config", bound="StoredConfig")


class StoredConfig:
    """Mixin of the network dataclasses: stored with the weights as a plain dict."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # the subclasses are dataclasses

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[Config], data: dict) -> Config:
        """The configuration stored by :meth:`to_dict` (JSON lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class NetConfig(StoredConfig):
    """Mixin of the U-Net dataclasses (with a ``strides`` field)."""

    strides: tuple[int, ...]

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this."""
        return math.prod(self.strides)
