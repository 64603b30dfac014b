"""Training augmentation of dose patches, built from MONAI transforms.

A patch is a dict with "ct" (1, X, Y, Z), "rest" (the other input channels) and
"dose" (1, X, Y, Z). Spatial transforms move all three together; intensity
transforms touch only the CT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from DoseSegLib.models.common.augment import AugmentBase
from DoseSegLib.models.common.mirror import lateral_pairs, swap_pairs
from DoseSegLib.models.dose.inputs import CHANNELS

REST_PAIRS = lateral_pairs(CHANNELS[1:])  # paired structures among the "rest" channels (all but the CT)


@dataclass
class AugmentConfig(AugmentBase):
    """The dose training's augmentations: the shared ones, translation, elastic warp and blur."""

    translate_vox: float = 4.0
    elastic_prob: float = 0.0
    blur_prob: float = 0.1


def left_right_flip(patch: dict[str, torch.Tensor], pairs: list = REST_PAIRS) -> dict[str, torch.Tensor]:
    """Mirror across the patient's mid-sagittal plane; paired structures' channels (``pairs``) swap sides."""
    flipped = {key: torch.flip(value, dims=(1,)) for key, value in patch.items()}
    flipped["rest"] = swap_pairs(flipped["rest"], pairs)
    return flipped


class DoseAugmentation:
    """Random flips, small rotations/translations, optional elastic warp, CT noise and blur."""

    def __init__(self, config: AugmentConfig, seed: int = 0, channels: tuple[str, ...] = CHANNELS) -> None:
        from monai.transforms import Compose, Rand3DElasticd, RandAffined, RandGaussianNoised, RandGaussianSmoothd

        keys = ["ct", "rest", "dose"]
        radians = np.deg2rad(config.rotate_deg)
        self.config = config
        self.pairs = lateral_pairs(channels[1:])
        self.rng = np.random.default_rng(seed)
        transforms = [
            RandAffined(
                keys, prob=config.affine_prob, rotate_range=(radians,) * 3,
                translate_range=(config.translate_vox,) * 3, mode="bilinear", padding_mode="border",
            ),
            RandGaussianNoised(["ct"], prob=config.noise_prob, std=config.noise_std),
            RandGaussianSmoothd(["ct"], prob=config.blur_prob, sigma_x=(0.25, 0.75), sigma_y=(0.25, 0.75),
                                sigma_z=(0.25, 0.75)),
        ]
        if config.elastic_prob > 0:
            transforms.insert(1, Rand3DElasticd(
                keys, prob=config.elastic_prob, sigma_range=(5, 8), magnitude_range=(50, 150),
                mode="bilinear", padding_mode="border",
            ))
        self.monai = Compose(transforms)
        self.monai.set_random_state(seed=seed)

    def __call__(self, patch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.rng.random() < self.config.flip_prob:
            patch = left_right_flip(patch, self.pairs)
        out = self.monai(patch)
        return {key: torch.as_tensor(value) for key, value in out.items()}
