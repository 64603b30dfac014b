"""Dose inference on a cropped box: sliding windows over the possible-dose box, optional flip TTA."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from DoseSegLib.models.common.arrays import inference_shape, pad_to
from DoseSegLib.models.common.devices import autocast
from DoseSegLib.models.dose.augment import left_right_flip
from DoseSegLib.models.dose.net import DoseNet


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
            dose = sliding_window_inference(batch, roi, 4, net, overlap=0.25, mode="gaussian")
            return cast(torch.Tensor, dose).float()

    raw = run(x)
    if tta:
        patch = left_right_flip({"ct": x[0, :1], "rest": x[0, 1:]})
        mirrored = run(torch.cat([patch["ct"], patch["rest"]])[None])
        raw = (raw + torch.flip(mirrored, dims=(2,))) / 2
    dose = torch.relu(raw) * (x[:, -1:] > 0.5)
    return dose[0, 0].cpu().numpy()[region]
