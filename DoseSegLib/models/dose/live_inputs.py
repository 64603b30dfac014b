"""The dose network's input channels of one case, kept in memory and updated structure by structure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from DoseSegLib.core.case import OARS, Case, target_prescription
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import mask_box
from DoseSegLib.models.common.arrays import REFERENCE_GY
from DoseSegLib.models.dose.inputs import CHANNELS, channel_names, dose_input_channels, target_proximity

TARGETS = CHANNELS.index("targets")
PROXIMITY = CHANNELS.index("target_proximity")


def oar_channel(name: str, oars: Sequence[str] = OARS) -> int:
    """Index of an OAR's mask channel (among the channels of ``oars``)."""
    return channel_names(oars).index(name)


class LiveInputs:
    """``dose_input_channels`` of a case, re-prepared only where a structure edit changes them.

    An OAR edit rewrites that OAR's channel; a target edit recomputes that target's distance
    map only (the other targets' maps are kept), over ``box`` and the target's own extent
    (exact there: every target voxel lies inside), and recombines the two target channels; any
    other structure is no input of the network and changes nothing. The channels are those of
    ``dose_input_channels`` inside ``box`` (the region the network sees).
    """

    def __init__(self, case: Case, box: tuple[slice, ...], oars: Sequence[str] = OARS) -> None:
        self.spacing = case.ct.spacing
        self.box = box
        self.oars = tuple(oars)
        self.channels = dose_input_channels(case, self.oars)
        self.masks = {n: case.structures[n].array.astype(bool) for n in case.targets}
        self.proximity = {n: self._proximity(n, m) for n, m in self.masks.items()}

    def _proximity(self, name: str, mask: np.ndarray) -> np.ndarray:
        """The target's proximity map over the box and the target's bounding box (zero elsewhere)."""
        extent = mask_box(mask)
        crop = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(self.box, extent, strict=True))
        proximity = np.zeros(mask.shape, np.float32)
        proximity[crop] = target_proximity(mask[crop], self.spacing, self.level(name))
        return proximity

    @staticmethod
    def level(name: str) -> float:
        """Prescription (Gy) of a target name."""
        level = target_prescription(name)
        if level is None:
            raise DoseSegError(f"'{name}' is not a target whose name gives its dose")
        return level

    def set_structure(self, name: str, mask: np.ndarray) -> bool:
        """Replace or add structure ``name`` (bool array on the case's grid); True if an input changed."""
        if name in self.oars:
            self.channels[oar_channel(name, self.oars)] = mask
            return True
        if target_prescription(name) is None:
            return False
        self.masks[name] = mask.astype(bool)
        self.proximity[name] = self._proximity(name, self.masks[name])
        weighted = np.zeros(mask.shape, np.float32)
        for target, target_mask in sorted(self.masks.items(), key=lambda item: self.level(item[0])):
            weighted[target_mask] = np.maximum(weighted[target_mask], self.level(target) / REFERENCE_GY)
        self.channels[TARGETS] = weighted
        self.channels[PROXIMITY] = np.maximum.reduce(list(self.proximity.values()))
        return True
