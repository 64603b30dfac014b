"""Segmentation quality: Dice, 95% Hausdorff distance, surface Dice (MONAI) and DOSELO's dosimetric RMAE."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.tables import Row


def _pair(pred: Volume, ref: Volume) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
    """Both masks as ``[1, 1, i, j, k]`` tensors, and whether each has a voxel."""
    if not pred.same_grid(ref):
        raise DoseSegError("predicted and reference masks are not on the same grid: align them first")
    p = pred.array.astype(bool, copy=False)
    r = ref.array.astype(bool, copy=False)
    return torch.from_numpy(p)[None, None], torch.from_numpy(r)[None, None], bool(p.any()), bool(r.any())


@contextlib.contextmanager
def _quiet_monai() -> Iterator[None]:
    """Hide MONAI's internal deprecation notice about its own ``get_mask_edges`` arguments."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        yield


def dice(pred: Volume, ref: Volume) -> float:
    """Dice coefficient 2|P & R| / (|P| + |R|); 1 when both masks are empty.

    Args:
        pred: predicted boolean mask.
        ref: reference boolean mask on the same grid.
    """
    p, r, _, _ = _pair(pred, ref)
    return float(compute_dice(p, r, include_background=True, ignore_empty=False))


def hausdorff95(pred: Volume, ref: Volume) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the mask surfaces, in mm.

    0 when both masks are empty, infinity when only one is.

    Args:
        pred: predicted boolean mask.
        ref: reference boolean mask on the same grid.
    """
    p, r, has_p, has_r = _pair(pred, ref)
    if not (has_p and has_r):
        return 0.0 if has_p == has_r else math.inf
    with _quiet_monai():
        distance = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=list(ref.spacing))
    return float(distance)


def surface_dice(pred: Volume, ref: Volume, tolerance_mm: float = 2.0) -> float:
    """Normalised surface Dice: fraction of both surfaces within ``tolerance_mm`` of the other.

    1 when both masks are empty, 0 when only one is.

    Args:
        pred: predicted boolean mask.
        ref: reference boolean mask on the same grid.
        tolerance_mm: the accepted surface deviation in mm.
    """
    p, r, has_p, has_r = _pair(pred, ref)
    if not (has_p and has_r):
        return float(has_p == has_r)
    with _quiet_monai():
        value = compute_surface_dice(
            p, r, class_thresholds=[tolerance_mm], include_background=True, spacing=list(ref.spacing)
        )
    return float(value)


def dosimetric_rmae(dose_from_pred: Volume, dose_from_true: Volume, possible_dose_mask: Volume) -> float:
    """DOSELO's relative mean absolute dose error of a segmentation.

    RMAE = sum_{v in M} |d_pred(v) - d_true(v)| / sum_{v in M} |d_true(v)|, where d_pred is the
    dose predicted from the predicted OARs, d_true the dose predicted from the true OARs and M
    the possible-dose mask.

    Args:
        dose_from_pred: dose predicted with the predicted structures (Gy).
        dose_from_true: dose predicted with the reference structures (Gy), same grid.
        possible_dose_mask: boolean mask M on the same grid.
    """
    if not (dose_from_pred.same_grid(dose_from_true) and dose_from_pred.same_grid(possible_dose_mask)):
        raise DoseSegError("RMAE: both doses and the possible-dose mask must share one grid")
    mask = possible_dose_mask.array.astype(bool, copy=False)
    true = dose_from_true.array[mask].astype(np.float64)
    denominator = np.abs(true).sum()
    if denominator == 0:
        raise DoseSegError("RMAE: the reference dose is zero everywhere in the possible-dose mask")
    return float(np.abs(dose_from_pred.array[mask] - true).sum() / denominator)


def segmentation_table(
    pred: Mapping[str, Volume], ref: Mapping[str, Volume], tolerance_mm: float = 2.0
) -> list[Row]:
    """Dice, HD95 (mm) and surface Dice of every reference structure; a structure not predicted scores as empty.

    Args:
        pred: predicted boolean masks by name.
        ref: reference boolean masks by name, on the same grid.
        tolerance_mm: surface Dice tolerance.
    """
    rows = []
    for name, reference in ref.items():
        predicted = pred.get(name, reference.with_array(np.zeros(reference.shape, dtype=bool)))
        rows.append({
            "structure": name,
            "dice": dice(predicted, reference),
            "hd95_mm": hausdorff95(predicted, reference),
            f"surface_dice_{tolerance_mm:g}mm": surface_dice(predicted, reference, tolerance_mm),
        })
    return rows
