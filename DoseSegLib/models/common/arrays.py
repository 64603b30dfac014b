"""Array helpers shared by the dose, segmentation and feature networks: padding, shapes, devices."""

from __future__ import annotations

import numpy as np
import torch

REFERENCE_GY = 70.0  # dose channels and targets are scaled by this
BOX_MARGIN = 4  # voxels kept around the body (possible-dose) box that a network sees
CT_PAD = -1.0  # the CT channel's value for air


def ct_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """HU clipped to [low, high] and scaled to [0, 1] (float32 in, float32 out)."""
    return (np.clip(values, low, high) - low) / (high - low)


def pad_to(array: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad channels-first ``array`` at the end of each spatial axis to ``shape``; CT with air."""
    pads = [(0, max(0, s - n)) for s, n in zip(shape, array.shape[1:], strict=True)]
    out = np.pad(array, [(0, 0), *pads])
    if any(after for _, after in pads):
        region = tuple(slice(0, n) for n in array.shape[1:])
        ct = np.full(out.shape[1:], CT_PAD, out.dtype)
        ct[region] = array[0]
        out[0] = ct
    return out, tuple(slice(0, n) for n in array.shape[1:])



def inference_shape(shape: tuple[int, ...], roi: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """At least ``roi`` and a multiple of ``multiple`` on each axis."""
    return tuple(max(r, -(-n // multiple) * multiple) for n, r in zip(shape, roi, strict=True))



def to_device(patch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The patch's tensors on ``device`` (augmentation then runs there too)."""
    return {key: value.to(device, non_blocking=True) for key, value in patch.items()}

