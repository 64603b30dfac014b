"""One canonical voxel order for the networks: array axes along L, P, S (identity direction, as trained).

A CT stored with a reversed or permuted axis is the same physical image; a network that
sees its raw array would see a mirrored or rotated patient. Every model input goes through
:meth:`Reorientation.to_canonical` first and every result back through
:meth:`Reorientation.from_canonical`: only axis permutations and flips, so both are exact
(no interpolation) and the physical position of every voxel is kept.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume


@dataclass(frozen=True)
class Reorientation:
    """How a grid's array axes map onto the canonical L, P, S axes.

    Attributes:
        axes: ``axes[a]`` is the input array axis that runs along canonical axis ``a``.
        flips: ``flips[a]`` when that input axis runs against canonical axis ``a`` (R, A or I).
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def of(cls, volume: Volume) -> Reorientation:
        """The permutation and flips bringing ``volume``'s direction closest to the identity."""
        direction = np.asarray(volume.direction, dtype=float)
        axes = max(itertools.permutations(range(3)),
                   key=lambda perm: sum(abs(direction[a, n]) for a, n in enumerate(perm)))
        first, second, third = (bool(direction[a, n] < 0) for a, n in enumerate(axes))
        return cls((axes[0], axes[1], axes[2]), (first, second, third))

    @property
    def identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    def array_to_canonical(self, array: np.ndarray) -> np.ndarray:
        """The array (3D, or 4D with leading channels) in canonical voxel order."""
        lead = array.ndim - 3
        out = np.transpose(array, (*range(lead), *(lead + n for n in self.axes)))
        flipped = tuple(lead + a for a in range(3) if self.flips[a])
        return np.ascontiguousarray(np.flip(out, flipped) if flipped else out)

    def array_from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`array_to_canonical`."""
        lead = array.ndim - 3
        flipped = tuple(lead + a for a in range(3) if self.flips[a])
        out = np.flip(array, flipped) if flipped else array
        inverse = np.argsort(self.axes)
        return np.ascontiguousarray(np.transpose(out, (*range(lead), *(lead + int(a) for a in inverse))))

    def to_canonical(self, volume: Volume) -> Volume:
        """The same physical image with its array in canonical order (geometry updated exactly)."""
        if self.identity:
            return volume
        spacing = np.asarray(volume.spacing)[list(self.axes)]
        signs = np.where(self.flips, -1.0, 1.0)
        direction = volume.direction[:, list(self.axes)] * signs
        first = np.zeros(3)
        for a, n in enumerate(self.axes):
            first[n] = volume.shape[n] - 1 if self.flips[a] else 0
        origin = (volume.index_to_lps @ np.append(first, 1.0))[:3]
        return Volume(self.array_to_canonical(volume.array), tuple(spacing), tuple(origin), direction)

    def from_canonical(self, volume: Volume, grid: Volume) -> Volume:
        """A canonical-order result put back on the input ``grid`` (the volume :meth:`of` was taken from)."""
        return volume if self.identity else grid.with_array(self.array_from_canonical(volume.array))

    def case_to_canonical(self, case: Case) -> Case:
        """Every volume of an aligned case (CT grid) in canonical order."""
        if self.identity:
            return case
        return replace(case, ct=self.to_canonical(case.ct),
                       structures={n: self.to_canonical(m) for n, m in case.structures.items()},
                       dose=None if case.dose is None else self.to_canonical(case.dose),
                       possible_dose_mask=(None if case.possible_dose_mask is None
                                           else self.to_canonical(case.possible_dose_mask)))
