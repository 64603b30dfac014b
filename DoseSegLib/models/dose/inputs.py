"""Input channels of the dose network, built from an aligned case on its CT grid."""

from __future__ import annotations

import numpy as np

from collections.abc import Sequence

from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common.arrays import REFERENCE_GY, ct_window

CT_RANGE = (-1024.0, 1024.0)
PROXIMITY_MM = 15.0


def channel_names(oars: Sequence[str] = OARS) -> tuple[str, ...]:
    """The dose network's input channels for a site's organs (OpenKBP's by default)."""
    return ("ct", "targets", "target_proximity", *oars, "possible_dose_mask")


CHANNELS = channel_names()


def target_proximity(mask: np.ndarray, spacing: tuple[float, ...], level: float) -> np.ndarray:
    """One target's proximity map Rx/70 * exp(-d / 15 mm), d the distance (mm) to the target."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return (level / REFERENCE_GY * np.exp(-distance / PROXIMITY_MM)).astype(np.float32)


def target_channels(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Targets weighted by prescription / 70 Gy, and a proximity map max(Rx/70 * exp(-d / 15 mm))."""
    shape = case.ct.shape
    weighted = np.zeros(shape, np.float32)
    proximity = np.zeros(shape, np.float32)
    for name, level in sorted(case.targets.items(), key=lambda item: item[1]):
        mask = case.structures[name].array
        weighted[mask] = np.maximum(weighted[mask], level / REFERENCE_GY)
        np.maximum(proximity, target_proximity(mask, case.ct.spacing, level), out=proximity)
    return weighted, proximity


def unknown_dose_message(case: Case) -> str:
    """Why the dose model cannot run: targets whose dose neither an RTPLAN nor the name gives."""
    unknown = case.unknown_targets
    them, names = ("them", "their names give") if len(unknown) > 1 else ("it", "its name gives")
    unmatched = case.unmatched_prescriptions
    also = (f"; the RTPLAN's dose references {', '.join(f'{n} ({gy:g} Gy)' for n, gy in unmatched.items())} match "
            "no structure" if unmatched else "")
    return (f"patient '{case.name}': the dose of target{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} is "
            f"unknown: no RTPLAN prescribes {them} and {names} none (a dose is read only from names like PTV70 or "
            f"PTV_59.4; in PTV1 or PTV2 the number counts the targets){also}; give {'each' if them == 'them' else 'it'}"
            f" with --prescription, e.g. --prescription {unknown[0]}=70")


def dose_input_channels(case: Case, oars: Sequence[str] = OARS) -> np.ndarray:
    """Array ``(len(channel_names(oars)), X, Y, Z)`` float32 for an aligned case with at least one PTV."""
    if case.unknown_targets:
        raise DoseSegError(unknown_dose_message(case))
    if not case.targets:
        raise DoseSegError(
            f"patient '{case.name}' has no target (PTV<dose>, e.g. PTV70): the dose model needs one"
        )
    if case.possible_dose_mask is None:
        raise ValueError("align the case first (align_case adds the possible-dose mask)")
    ct = ct_window(case.ct.array.astype(np.float32), *CT_RANGE) * 2 - 1
    weighted, proximity = target_channels(case)
    channels = [ct, weighted, proximity]
    empty = np.zeros(case.ct.shape, np.float32)
    for oar in oars:
        channels.append(case.structures[oar].array.astype(np.float32) if oar in case.structures else empty)
    channels.append(case.possible_dose_mask.array.astype(np.float32))
    return np.stack(channels)


