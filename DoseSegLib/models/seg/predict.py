"""Auto-segmentation of organs at risk with a catalogue model (console API and CLI step).

Usage: ``masks = segment_case(load_segmentation_model(), align_case(read_patient(folder)))``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from DoseSegLib.analysis.ctcheck import check_ct
from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.colors import structure_colors
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device
from DoseSegLib.core.orientation import Reorientation
from DoseSegLib.core.volume import Volume, mask_box
from DoseSegLib.io.patient import ct_source, write_segmentation, write_structures
from DoseSegLib.models.common.arrays import BOX_MARGIN
from DoseSegLib.models.common.devices import cpu_if_out_of_memory
from DoseSegLib.models.common.grid import box_volume, working_grid
from DoseSegLib.models.common.handle import ModelHandle
from DoseSegLib.models.seg.data import AIR_HU, InputSpec, input_channels, is_ct, read_inputs, region_mask

if TYPE_CHECKING:
    import torch

    from DoseSegLib.models.common.net_config import StoredConfig
    from DoseSegLib.models.seg.net import SegNet

log = logging.getLogger(__name__)
OUTSIDE = -1.0  # probability given to CT voxels outside the model's box: below every threshold


@dataclass
class SegModel(ModelHandle):
    """A loaded segmentation network with what it needs at inference.

    Attributes:
        thresholds: probability threshold of each label (tuned on validation).
        patch: sliding-window size.
    """

    TASK = "segmentation"

    net: SegNet
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    inputs: InputSpec
    patch: tuple[int, int, int]

    @staticmethod
    def network_classes() -> tuple[type[torch.nn.Module], type[StoredConfig]]:
        from DoseSegLib.models.seg.net import SegNet, SegNetConfig

        return SegNet, SegNetConfig

    @staticmethod
    def from_meta(meta: dict) -> dict:
        return {"labels": tuple(meta["labels"]), "thresholds": dict(meta["thresholds"]),
                "inputs": InputSpec.from_dict(meta["inputs"]), "patch": tuple(meta["patch"])}


def load_segmentation_model(name: str | None = None, device: Device | str = Device.AUTO,
                            weights: Path | None = None) -> SegModel:
    """A segmentation model (see :meth:`ModelHandle.load`)."""
    return SegModel.load(name, device, weights)


def segment_case(model: SegModel, case: Case, images: list[Volume] | None = None,
                 single_component: bool = True, tta: bool = False) -> dict[str, Volume]:
    """Boolean masks, one per label, on the CT grid of an aligned ``case`` (see alignment.align_case).

    Args:
        images: the model's input images on the CT grid (see ``seg_data.read_inputs``);
            by default the case's CT, for CT-only models.
        single_component: keep only the largest connected region of each OAR.
        tta: average the probabilities with those of the left-right mirrored image.
    """
    from DoseSegLib.models.seg.inference import largest_component, predict_probabilities

    if images is None:
        if len(model.inputs.images) != 1:
            raise DoseSegError(f"the model needs the images {model.inputs.images}; pass them as ``images``")
        images = [case.ct]
    input_ct, orientation = case.ct, Reorientation.of(case.ct)  # the network sees canonical voxel order
    case = orientation.case_to_canonical(case)
    images = [orientation.to_canonical(image) for image in images]
    region = region_mask(case)
    grid = working_grid(case.ct, region)
    if grid is not None:  # a CT finer (or coarser) than the model's: the model sees its own spacing
        images = [resample(image, grid, "linear", AIR_HU if is_ct(name) else 0.0)
                  for image, name in zip(images, model.inputs.images, strict=True)]
        region = resample_mask(case.ct.with_array(region), grid).array
    box = mask_box(region, BOX_MARGIN)
    image = input_channels(images, model.inputs, region)[(slice(None), *box)]
    probabilities = cpu_if_out_of_memory(
        model, lambda: predict_probabilities(model.net, image, model.patch, model.device, model.amp,
                                             model.labels if tta else None))
    masks = {}
    for label, probability in zip(model.labels, probabilities, strict=True):
        if grid is None:
            mask = np.zeros(case.ct.shape, bool)
            mask[box] = probability >= model.thresholds[label]
        else:  # probabilities, not labels, brought to the CT grid: smooth edges on a fine CT
            level = threshold_at_half(probability, model.thresholds[label])
            mask = resample(box_volume(grid, box, level), case.ct, "linear", OUTSIDE).array >= 0.5
        if single_component and label in OARS:
            mask = largest_component(mask)
        masks[label] = orientation.from_canonical(case.ct.with_array(mask), input_ct)
    return masks


def threshold_at_half(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities rescaled piecewise linearly so that ``threshold`` becomes 0.5 (0 and 1 kept).

    Interpolated and cut at 0.5, the mask equals the model grid's own ``probability >= threshold`` at
    that grid's voxel centres, and an edge between an organ's voxel and the next lies near their
    midpoint; cut at a high threshold (0.95) instead, the interpolated probabilities erode a thin organ
    by up to half a model voxel on each side and break it apart (spinal cord, #22).
    """
    above = probability >= threshold
    scaled = np.where(above, probability - threshold, probability) / np.where(above, max(1.0 - threshold, 1e-6),
                                                                              max(threshold, 1e-6))
    return (0.5 * scaled + 0.5 * above).astype(np.float32)


def segment_folder(model: SegModel, folder: Path, tta: bool = False) -> dict[str, Volume]:
    """Masks for a patient folder holding the model's input images (ct.nrrd, ...)."""
    case, images = read_inputs(Path(folder), model.inputs)
    check_ct(case.ct, ct_source(Path(folder), case))
    return segment_case(model, case, images, tta=tta)


def write_masks(folder: Path, masks: dict[str, Volume]) -> list[str]:
    """Write ``segmentation.seg.nrrd`` (named, coloured segments) and ``structures/<Name>.nrrd``.

    Empty masks are left out (with a warning). Returns the names written.
    """
    kept = {name: mask for name, mask in masks.items() if mask.array.any()}
    for name in masks.keys() - kept.keys():
        log.warning("%s: no voxel found for %s; not written", folder.name, name)
    if not kept:
        raise DoseSegError(f"{folder.name}: no structure found")
    write_segmentation(folder / "segmentation.seg.nrrd", kept, structure_colors(kept))
    write_structures(folder / "structures", kept)
    return list(kept)
