"""Augmentation settings every training shares (each task adds its own)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AugmentBase:
    """Probabilities and ranges of the augmentations of every task: mirror, rotation, CT noise."""

    flip_prob: float = 0.5
    affine_prob: float = 0.25
    rotate_deg: float = 5.0
    noise_prob: float = 0.2
    noise_std: float = 0.03
