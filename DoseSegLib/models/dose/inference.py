"""Dose inference on a cropped box: sliding windows over the possible-dose box, optional flip TTA."""

from __future__ import annotations

import numpy as np
import torch

from DoseSegLib.models.common.devices import autocast
from DoseSegLib.models.dose.augment import left_right_flip
from DoseSegLib.models.dose.net import DoseNet

CT_PAD = -1.0  # the CT channel's value for air


def pad_to(array: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad channels-first ``array`` at the end of each spatial axis to ``shape``; CT with air."""
    pads = [(0, max(0, s - n)) for s, n in zip(shape, array.shape[1:])]
    out = np.pad(array, [(0, 0), *pads])
    if any(after for _, after in pads):
        region = tuple(slice(0, n) for n in array.shape[1:])
        ct = np.full(out.shape[1:], CT_PAD, out.dtype)
        ct[region] = array[0]
        out[0] = ct
    return out, tuple(slice(0, n) for n in array.shape[1:])


def inference_shape(shape: tuple[int, ...], roi: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """At least ``roi`` and a multiple of ``multiple`` on each axis."""
    return tuple(max(r, -(-n // multiple) * multiple) for n, r in zip(shape, roi))


@torch.inference_mode()
def predict_box(
    net: DoseNet, inputs: np.ndarray, roi: tuple[int, int, int], device: torch.device,
    tta: bool = False, amp: bool = False,
) -> np.ndarray:
    """Dose (Gy) for channels-first ``inputs`` of one box; same spatial shape, masked, >= 0.

    Args:
        roi: sliding-window size (the training patch size).
        tta: average with the left-right mirrored prediction.
        amp: bfloat16 mixed precision (CUDA only).
    """
    from monai.inferers import sliding_window_inference

    padded, region = pad_to(inputs.astype(np.float32),
                            inference_shape(inputs.shape[1:], roi, net.config.size_multiple))
    x = torch.from_numpy(padded)[None].to(device)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            return sliding_window_inference(batch, roi, 4, net, overlap=0.25, mode="gaussian").float()

    raw = run(x)
    if tta:
        patch = left_right_flip({"ct": x[0, :1], "rest": x[0, 1:]})
        mirrored = run(torch.cat([patch["ct"], patch["rest"]])[None])
        raw = (raw + torch.flip(mirrored, dims=(2,))) / 2
    dose = torch.relu(raw) * (x[:, -1:] > 0.5)
    return dose[0, 0].cpu().numpy()[region]
