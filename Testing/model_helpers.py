"""Tiny randomly initialised networks for the tests that run a dose model end to end."""

from __future__ import annotations

from DoseSegLib.models.dose.net import DoseNetConfig

# Why 7 Gy: a network's raw output is multiplied by dose_scale_gy (70 Gy in trained models). An
# untrained tiny network's output at 70 Gy reaches hundreds of Gy, which check_predicted_dose
# (analysis/dosecheck.py: at most 1.3 x the highest prescription) refuses as implausible before
# anything is written; at 7 Gy its random doses stay plausible, so the commands run to the end.
TINY_DOSE_SCALE_GY = 7.0


def tiny_dose_config(**changes) -> DoseNetConfig:
    """A tiny dose network (3 levels, one residual unit) whose random doses pass the plausibility check.

    Args:
        changes: other DoseNetConfig fields (e.g. ``dropout=0.0``).
    """
    return DoseNetConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, dose_scale_gy=TINY_DOSE_SCALE_GY,
                         **changes)
