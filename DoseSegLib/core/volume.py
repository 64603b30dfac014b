"""The one image type of DoseSegLib: a 3D array with its physical geometry (LPS)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from DoseSegLib.core.errors import DoseSegError

__all__ = ["Volume", "crop_box", "crop_to_content", "mask_box"]


@dataclass
class Volume:
    """A 3D image on a physical grid.

    Attributes:
        array: voxel values indexed ``[i, j, k]`` along the grid axes (NRRD order).
        spacing: voxel size in mm along i, j, k (three numbers, checked).
        origin: LPS position (mm) of the centre of voxel ``[0, 0, 0]`` (three numbers, checked).
        direction: 3x3 matrix whose columns are the unit LPS directions of i, j, k.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        try:
            self.spacing = tuple(float(s) for s in self.spacing)
            self.origin = tuple(float(o) for o in self.origin)
            self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        except (TypeError, ValueError) as exc:
            raise DoseSegError(f"Volume: spacing, origin and direction must be 3, 3 and 3x3 numbers ({exc})") from None
        if not isinstance(self.array, np.ndarray) or self.array.ndim != 3:
            raise DoseSegError(f"Volume: the array must be a 3D numpy array, not {type(self.array).__name__} "
                               f"of shape {getattr(self.array, 'shape', '?')}")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise DoseSegError(f"Volume: spacing {self.spacing} must be three positive numbers (mm)")
        if len(self.origin) != 3 or not all(math.isfinite(o) for o in self.origin):
            raise DoseSegError(f"Volume: origin {self.origin} must be three finite numbers (mm)")
        if not np.all(np.isfinite(self.direction)) or abs(np.linalg.det(self.direction)) < 1e-3:
            raise DoseSegError(f"Volume: direction {self.direction.tolist()} is not a 3D orientation")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm^3."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def index_to_lps(self) -> np.ndarray:
        """4x4 matrix taking homogeneous ``(i, j, k, 1)`` to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume on the same grid holding ``array``."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy())

    def same_grid(self, other: Volume, tol: float = 1e-4) -> bool:
        """True when both volumes have the same size, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def to_sitk(self):
        """The volume as a SimpleITK image (SimpleITK indexes arrays ``[k, j, i]``)."""
        import SimpleITK as sitk

        array = self.array.astype(np.uint8) if self.array.dtype == bool else self.array
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction.flatten().tolist())
        return image

    @classmethod
    def from_sitk(cls, image) -> Volume:
        """A volume from a SimpleITK image (LPS, like ITK)."""
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        return cls(array, image.GetSpacing(), image.GetOrigin(), direction)


def mask_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels, within the array."""
    if mask.ndim == 3:  # one pass over the whole array, the last axis's range within the box of the others
        first = mask_box(np.asarray(mask.any(axis=2)), margin)
        hit = np.flatnonzero(mask[first].any(axis=(0, 1)))
        return (*first, slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[2])))
    box = []
    for axis, size in enumerate(mask.shape):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, size)))
    return tuple(box)



def crop_box(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """The sub-volume ``box`` (slices with starts) of ``volume``, origin moved: same voxels, same positions."""
    origin = volume.index_to_lps @ np.append([region.start for region in box], 1.0)
    # a compact copy in the source's memory order (a C-order copy of a Fortran-order array would transpose it)
    return Volume(volume.array[box].copy(order="K"), volume.spacing, tuple(origin[:3]), volume.direction)


def crop_to_content(volume: Volume, mask: np.ndarray) -> Volume:
    """The sub-volume covering the bounding box of ``mask``, origin moved accordingly."""
    if not mask.any():
        return volume
    return crop_box(volume, mask_box(mask))

