"""Sliding-window probabilities of the segmentation network and per-label threshold tuning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from DoseSegLib.models.common.arrays import inference_shape
from DoseSegLib.models.common.devices import autocast
from DoseSegLib.models.common.mirror import lateral_pairs, swap_pairs
from DoseSegLib.models.seg.data import pad_channels
from DoseSegLib.models.seg.net import SegNet

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


@torch.inference_mode()
def predict_probabilities(net: SegNet, image: np.ndarray, roi: tuple[int, int, int], device: torch.device,
                          amp: bool = False, mirror_labels: tuple[str, ...] | None = None) -> np.ndarray:
    """Sigmoid probabilities ``(labels, X, Y, Z)`` float32 for channels-first ``image``.

    Args:
        roi: sliding-window size (the training patch).
        amp: bfloat16 mixed precision (CUDA only).
        mirror_labels: the label names, to also predict the left-right mirrored image
            (paired structures' channels swapped back) and average the two; None: no mirror.
    """
    from monai.inferers import sliding_window_inference

    shape = image.shape[1:]
    padded = pad_channels(image.astype(np.float32), inference_shape(shape, roi, net.config.size_multiple))
    x = torch.from_numpy(np.ascontiguousarray(padded))[None].to(device)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            logits = sliding_window_inference(batch, roi, 4, net, overlap=0.25, mode="gaussian")
            return torch.sigmoid(cast(torch.Tensor, logits).float())

    probabilities = run(x)[0]
    if mirror_labels is not None:
        mirrored = torch.flip(run(torch.flip(x, dims=(2,)))[0], dims=(1,))
        probabilities = (probabilities + swap_pairs(mirrored, lateral_pairs(mirror_labels))) / 2
    return probabilities.cpu().numpy()[(slice(None), *(slice(0, n) for n in shape))]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected region of a boolean mask."""
    from scipy import ndimage

    labelled, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if count <= 1:
        return mask
    return labelled == np.argmax(np.bincount(labelled.ravel())[1:]) + 1


def overlap_counts(probabilities: np.ndarray, labels: np.ndarray,
                   single_component: Sequence[bool] | None = None) -> dict[str, np.ndarray]:
    """Per label and candidate threshold: true-positive and predicted voxel counts, and truth counts.

    Args:
        probabilities: ``(L, X, Y, Z)``.
        labels: ``(L, X, Y, Z)`` boolean truth.
        single_component: per label, whether each thresholded mask is first cut to its largest
            connected region, as ``segment_case`` does for OARs (default: no label).
    """
    edges = np.concatenate([[0.0], THRESHOLDS, [np.inf]])

    def at_least(values: np.ndarray) -> np.ndarray:
        counts = np.histogram(values, bins=edges)[0]
        return np.cumsum(counts[::-1])[::-1][1:]  # voxels with p >= each threshold

    def largest(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks = [largest_component(p >= threshold) for threshold in THRESHOLDS]
        return np.array([(m & t).sum() for m in masks]), np.array([m.sum() for m in masks])

    truth = labels.astype(bool)
    single = single_component or [False] * len(truth)
    counts = [largest(p, t) if one else (at_least(p[t]), at_least(p))
              for p, t, one in zip(probabilities, truth, single, strict=True)]
    return {
        "true_positive": np.stack([c[0] for c in counts]),
        "predicted": np.stack([c[1] for c in counts]),
        "truth": truth.reshape(len(truth), -1).sum(axis=1),
    }


def tune_thresholds(counts: list[dict[str, np.ndarray]], present: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the candidate threshold with the best mean Dice over the patients that have the label.

    Returns:
        thresholds (0.5 for a label no patient has) and the mean Dice at them (NaN there);
        ties go to the threshold nearest 0.5.
    """
    dice = np.stack([
        2 * c["true_positive"] / np.maximum(c["predicted"] + c["truth"][:, None], 1) for c in counts
    ])  # (patients, labels, thresholds)
    present_mask = np.stack(present)[:, :, None]
    scored = present_mask.sum(axis=0)
    mean = np.where(scored > 0, (dice * present_mask).sum(axis=0) / np.maximum(scored, 1), np.nan)
    best = np.argmax(np.nan_to_num(mean, nan=-1.0) - 1e-6 * np.abs(THRESHOLDS - 0.5), axis=1)
    rows = np.arange(len(best))
    return np.where(scored[:, 0] > 0, THRESHOLDS[best], 0.5), mean[rows, best]
