"""Training augmentation of segmentation patches, built from MONAI transforms.

A patch is a dict with "image" (C, X, Y, Z), "labels" (L, X, Y, Z), "present" (L,)
and optionally "dose_inputs" (the dose network's channels). Spatial transforms move
image, labels and dose inputs together; a left-right mirror swaps the channels of
paired structures (RightParotid <-> LeftParotid, Cochlea_R <-> Cochlea_L).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from DoseSegLib.models.common.augment import AugmentBase
from DoseSegLib.models.common.mirror import lateral_pairs, swap_pairs
from DoseSegLib.models.dose.inputs import CHANNELS

SPATIAL_KEYS = ("image", "labels", "dose_inputs")


@dataclass
class SegAugmentConfig(AugmentBase):
    """The segmentation training's augmentations: the shared ones (wider rotation), scaling, intensity."""

    affine_prob: float = 0.3
    rotate_deg: float = 7.0
    scale: float = 0.07
    intensity_prob: float = 0.2
    intensity_scale: float = 0.1


def _plain(value) -> torch.Tensor:
    """A plain tensor (MONAI transforms return MetaTensors)."""
    return torch.as_tensor(value).as_subclass(torch.Tensor)


class SegAugmentation:
    """Random left-right mirror, small rotation and scaling, intensity scaling and noise.

    Random patch positions already give translations.

    Args:
        labels: label names, in channel order (to swap left/right pairs on a mirror).
        seed: seeds both the mirror and the MONAI transforms.
    """

    def __init__(self, config: SegAugmentConfig, labels: Sequence[str], seed: int = 0) -> None:
        from monai.transforms import Compose, Flip, RandAffined, RandGaussianNoised, RandScaleIntensityd

        radians = np.deg2rad(config.rotate_deg)
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.flip = Flip(spatial_axis=0)
        self.pairs = {"labels": lateral_pairs(labels), "dose_inputs": lateral_pairs(CHANNELS), "image": []}
        self.random = Compose([
            RandAffined(
                SPATIAL_KEYS, prob=config.affine_prob, rotate_range=(radians,) * 3, scale_range=(config.scale,) * 3,
                mode=("bilinear", "nearest", "bilinear"),
                padding_mode=("border", "zeros", "border"), allow_missing_keys=True,
            ),
            RandScaleIntensityd(["image"], factors=config.intensity_scale, prob=config.intensity_prob),
            RandGaussianNoised(["image"], prob=config.noise_prob, std=config.noise_std),
        ])
        self.random.set_random_state(seed=seed)

    def mirror(self, patch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The patch mirrored across the mid-sagittal plane, paired structures swapped."""
        out = dict(patch)
        for key in SPATIAL_KEYS:
            if key in patch:
                out[key] = swap_pairs(_plain(self.flip(patch[key])), self.pairs[key])
        out["present"] = swap_pairs(patch["present"], self.pairs["labels"])
        return out

    def __call__(self, patch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.rng.random() < self.config.flip_prob:
            patch = self.mirror(patch)
        spatial = self.random({key: patch[key] for key in SPATIAL_KEYS if key in patch})
        return {**patch, **{key: _plain(value) for key, value in spatial.items()}}
