"""Choice of the torch device: CUDA when present and asked for, CPU otherwise."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, TypeVar

import torch

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device

log = logging.getLogger(__name__)
Result = TypeVar("Result")


class OnDevice(Protocol):
    """A loaded model (e.g. a ``ModelHandle``): its network and the device it runs on."""

    device: torch.device

    @property
    def net(self) -> torch.nn.Module: ...


def select_device(name: Device | str = Device.AUTO) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    device = Device.parse(name)
    if device == Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == Device.CUDA and not torch.cuda.is_available():
        raise DoseSegError("--device cuda asked, but no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(device.value)


def autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """bfloat16 mixed precision on CUDA when ``enabled``; a no-op on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def cpu_if_out_of_memory(model: OnDevice, run: Callable[[], Result]) -> Result:
    """``run()``; when CUDA runs out of memory, ``model`` (its ``net`` and ``device``)
    moves to the CPU for the rest of the session and ``run()`` is repeated there."""
    try:
        return run()
    except torch.cuda.OutOfMemoryError:
        if model.device.type != "cuda":
            raise
        log.warning("the GPU ran out of memory: continuing on the CPU (slower, same result)")
        torch.cuda.empty_cache()
        model.net.to("cpu")
        model.device = torch.device("cpu")
        return run()
