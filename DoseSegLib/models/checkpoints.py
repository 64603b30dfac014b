"""The full training state in ``RUN/last.pt``: saved after every epoch, resumed from at start."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def resume(last: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
           device: torch.device) -> dict:
    """``state`` updated from ``last`` (network and optimizer restored too) when that file exists."""
    if not last.is_file():
        return state
    checkpoint = torch.load(last, map_location=device, weights_only=True)
    net.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    log.warning("resuming from %s at epoch %d", last, checkpoint["state"]["epoch"])
    return {**state, **checkpoint["state"]}


def save_last(last: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write the training state atomically (a partial file, then renamed)."""
    partial = last.with_suffix(".partial")
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, partial)
    partial.replace(last)
