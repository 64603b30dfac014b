"""Sanity check of a CT's values: Hounsfield units with air near -1000 HU and soft tissue near 0 HU."""

from __future__ import annotations

import logging

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

log = logging.getLogger(__name__)

AIR_BELOW_HU = -500.0
TISSUE_HU = (-200.0, 300.0)
MIN_AIR_SHARE = 0.001
MIN_TISSUE_SHARE = 0.001  # pt_143 of OpenKBP train has 0.3%
SAMPLE_ABOVE = 16_000_000  # voxels (a clinical-size CT): the shares are then estimated on an eighth of them


def ct_problem(ct: Volume) -> str | None:
    """Why ``ct`` does not look like a CT in HU (None when it does)."""
    values = ct.array
    if values.size == 0:
        return "no voxel"
    low, high = float(values.min()), float(values.max())
    if low == high:
        return (f"no anatomy: every voxel has the same value, {low:g} HU (a blank, synthetic or broken export); "
                "export the patient's CT again")
    if low >= 0:
        return ("no negative value: stored with an offset (e.g. +1024, as unsigned integers) or not in HU; "
                "convert it to HU (air -1000)")
    if values.size > SAMPLE_ABOVE:  # shares are measured on every other voxel along each axis
        values = values[::2, ::2, ::2]
    if np.count_nonzero(values < AIR_BELOW_HU) < MIN_AIR_SHARE * values.size:
        return f"almost no air (under {MIN_AIR_SHARE:.1%} of voxels below {AIR_BELOW_HU:g} HU)"
    tissue = np.count_nonzero((values > TISSUE_HU[0]) & (values < TISSUE_HU[1]))
    if tissue < MIN_TISSUE_SHARE * values.size:
        return f"almost no soft tissue (under {MIN_TISSUE_SHARE:.1%} of voxels between {TISSUE_HU[0]:g} and " \
               f"{TISSUE_HU[1]:g} HU)"
    return None


def check_ct(ct: Volume, source: str, strict: bool = True) -> None:
    """Refuse (``strict``: commands that feed a model) or warn about a CT whose values are not plausible HU."""
    problem = ct_problem(ct)
    if problem is None:
        return
    message = f"{source}: implausible CT values ({problem})"
    if strict:
        raise DoseSegError(message + "; the models need the patient's CT in Hounsfield units")
    log.warning("%s", message)
