"""The OpenKBP challenge's metrics written out with plain numpy: an outside reference for the library's."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np


def challenge_metrics(dose: np.ndarray, structures: dict[str, np.ndarray], voxel_mm3: float) -> dict:
    """The challenge's own formulas, written out with numpy."""
    metrics = {}
    for name, mask in structures.items():
        roi = dose[mask]
        if not roi.size:
            continue
        if name in ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible"):
            n = np.maximum(1, np.round(100 / voxel_mm3))
            metrics[(name, "D0.1cc[Gy]")] = np.percentile(roi, 100 - n / roi.size * 100)
            metrics[(name, "Mean[Gy]")] = roi.mean()
        elif name in ("PTV56", "PTV63", "PTV70"):
            metrics[(name, "D99%[Gy]")] = np.percentile(roi, 1)
            metrics[(name, "D95%[Gy]")] = np.percentile(roi, 5)
            metrics[(name, "D1%[Gy]")] = np.percentile(roi, 99)
    return metrics


def on_ct_grid(path: Path, ct_origin: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """A cropped OpenKBP NRRD pasted into the 128^3 CT grid by its origin (plain numpy)."""
    data, header = nrrd.read(str(path))
    offset = np.round((np.asarray(header["space origin"]) - ct_origin) / spacing).astype(int)
    out = np.zeros((128, 128, 128), dtype=np.float64)
    out[tuple(slice(o, o + n) for o, n in zip(offset, data.shape))] = data
    return out
