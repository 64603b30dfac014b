"""Inputs of the feature autoencoder: CT windows, target union and dose on a small fixed grid.

Memory-bounded by design, for CTs of any size: the CT is first shrunk by whole
voxel bins (int16, so no float copy at full resolution), the body box is found on
the shrunk CT, and every image (CT, each target on its own cropped grid, the dose
on its own grid) is resampled through physical coordinates onto a grid of
``grid`` voxels spanning that box. Windows and scaling are applied on the small grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from DoseSegLib.core.alignment import body_mask, resample
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.orientation import Reorientation
from DoseSegLib.core.volume import Volume, crop_to_content, mask_box
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.common import patient_cache
from DoseSegLib.models.common.arrays import REFERENCE_GY, ct_window

AIR_HU = -1024.0
BOX_MARGIN_MM = 10.0
# full range, soft tissue, bone, lung, brain (HU)
DEFAULT_WINDOWS = ((-1024.0, 1024.0), (-160.0, 240.0), (-200.0, 1300.0), (-1000.0, -200.0), (0.0, 80.0))


@dataclass
class FeatureInputs:
    """How the autoencoder's input channels are made (stored with the weights).

    Attributes:
        ct_windows: HU windows, each clipped and scaled to [0, 1] as one channel.
        dose: add the dose (Gy / 70) as the last channel.
        grid: voxels of the fixed grid spanning the body box.
    """

    ct_windows: tuple[tuple[float, float], ...] = DEFAULT_WINDOWS
    dose: bool = True
    grid: tuple[int, int, int] = (64, 64, 64)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureInputs:
        return cls(tuple(tuple(w) for w in data["ct_windows"]), bool(data["dose"]), tuple(data["grid"]))

    @property
    def channels(self) -> int:
        """CT windows, the target union, and the dose when used."""
        return len(self.ct_windows) + 1 + int(self.dose)

    @property
    def channel_names(self) -> list[str]:
        windows = [f"ct[{low:g}:{high:g}]" for low, high in self.ct_windows]
        return [*windows, "targets", *(["dose"] if self.dose else [])]


def shrink(ct: Volume, grid: tuple[int, int, int]) -> Volume:
    """The CT averaged over whole bins of voxels so that each axis keeps at least twice ``grid`` voxels."""
    factors = [max(1, n // (2 * g)) for n, g in zip(ct.shape, grid, strict=True)]
    if factors == [1, 1, 1]:
        return ct
    import SimpleITK as sitk

    return Volume.from_sitk(sitk.BinShrink(ct.to_sitk(), factors))


def box_grid(ct: Volume, box: tuple[slice, slice, slice], grid: tuple[int, int, int]) -> Volume:
    """An empty grid of ``grid`` voxels whose outer faces are those of the voxel box ``box`` of ``ct``."""
    lo = np.array([s.start for s in box], float) - 0.5
    step = (np.array([s.stop for s in box], float) - 0.5 - lo) / np.asarray(grid)
    first = ct.index_to_lps @ np.append(lo + step / 2, 1.0)
    return Volume(np.zeros(grid, np.float32), tuple(np.asarray(ct.spacing) * step), tuple(first[:3]), ct.direction)


def target_union(case: Case, grid: Volume) -> np.ndarray:
    """Fraction of each grid voxel inside any target (PTV), from each mask's own bounding box."""
    if not case.target_names:
        raise DoseSegError(f"{case.source or case.name}: no target structure (PTV) to describe")
    union = np.zeros(grid.shape, np.float32)
    for name in case.target_names:
        mask = case.structures[name]
        box = crop_to_content(mask, mask.array)
        fraction = resample(box.with_array(box.array.astype(np.float32)), grid, "linear", 0.0)
        union = np.maximum(union, fraction.array)
    return union


def prepare_inputs(case: Case, spec: FeatureInputs) -> dict:
    """Input channels of one case on the fixed grid over its body box.

    Args:
        case: a patient as read (structures and dose may be on their own grids).
        spec: channels and grid.

    Returns:
        image (float32, ``(spec.channels, *spec.grid)``) and the grid as an empty Volume (geometry).
    """
    if spec.dose and case.dose is None:
        raise DoseSegError(f"{case.source or case.name}: no dose (dose.nrrd or RTDOSE), but the model uses the dose")
    small = shrink(Reorientation.of(case.ct).to_canonical(case.ct), spec.grid)  # canonical voxel order
    margin = int(np.ceil(BOX_MARGIN_MM / min(small.spacing)))
    box = mask_box(body_mask(small).array, margin)
    grid = box_grid(small, (box[0], box[1], box[2]), spec.grid)
    ct = resample(small, grid, "linear", AIR_HU).array
    channels = [ct_window(ct, low, high) for low, high in spec.ct_windows]
    channels.append(target_union(case, grid))
    if spec.dose:
        channels.append(resample(case.require_dose(), grid, "linear", 0.0).array / REFERENCE_GY)
    return {"image": np.stack(channels).astype(np.float32), "grid": grid}


def _prepare_folder(folder: Path, spec: FeatureInputs) -> dict[str, np.ndarray]:
    return {"image": prepare_inputs(read_patient(folder), spec)["image"].astype(np.float16)}


def build_cache(folders: list[Path], cache_dir: Path, spec: FeatureInputs, workers: int = 2) -> list[Path]:
    """Prepare every patient once (in parallel); the file names carry a key of ``spec``."""
    key = f"ae{patient_cache.options_key(spec.to_dict())}"
    return patient_cache.build_cache(folders, cache_dir, partial(_prepare_folder, spec=spec), key, workers)


def load_images(files: list[Path]) -> np.ndarray:
    """The cached images stacked as float32 ``(N, C, X, Y, Z)``."""
    return np.stack([patient_cache.load_arrays(file)["image"].astype(np.float32) for file in files])
