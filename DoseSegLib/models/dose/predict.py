"""Predict a patient's 3D dose with the bundled network (console API and CLI step)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume, mask_box
from DoseSegLib.models.common.arrays import BOX_MARGIN
from DoseSegLib.models.common.catalogue import ModelEntry, load_network
from DoseSegLib.models.common.devices import cpu_if_out_of_memory
from DoseSegLib.models.dose.inputs import dose_input_channels

log = logging.getLogger(__name__)
# Voxel sizes the network was trained on (OpenKBP: 2.7-5.4 mm in-plane, 1.5-3.3 mm slices).
TRAINED_SPACING_MIN = (2.7, 2.7, 1.5)
TRAINED_SPACING_MAX = (5.5, 5.5, 3.3)
WORKING_SPACING = (3.906, 3.906, 2.5)
@dataclass
class DoseModel:
    """A loaded dose network with its catalogue entry (None for weights loaded from a file).

    ``refiner``, when present, is a ``refine_net.RefineNet`` that corrects the network's prediction
    (a catalogue entry with a ``base``, or a train-dose-refiner best.pt); ``net`` is then the base
    model's network.
    """

    net: object
    entry: ModelEntry | None
    patch: tuple[int, int, int]
    device: object
    amp: bool
    refiner: object | None = None


def _patch(meta: dict, source: object) -> tuple[int, int, int]:
    if "patch" not in meta:
        raise DoseSegError(f"{source}: no patch size in its metadata; not a train-dose best.pt")
    return tuple(meta["patch"])


def load_dose_model(name: str | None = None, device: str = "auto", weights: Path | None = None) -> DoseModel:
    """Load a dose model onto ``device`` (networks in eval mode).

    Args:
        name: catalogue model name (default: the catalogue's default dose model); its
            checksum is verified before loading with weights_only=True. A refiner entry
            (with a ``base``) loads its base model too, checked the same way.
        device: "auto", "cpu" or "cuda".
        weights: a train-dose or train-dose-refiner best.pt to load instead (weights_only, no
            checksum: the file is the user's own); a refiner's base comes from the catalogue.
    """
    from DoseSegLib.models.common.catalogue import find_model
    from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig
    from DoseSegLib.models.dose.refine_net import RefineNet, RefineNetConfig

    if weights is None and find_model("dose", name).base or weights is not None and _is_refiner(weights):
        refiner, meta, entry, torch_device = load_network("dose", RefineNet, RefineNetConfig, name, weights, device)
        base_name = entry.base if entry is not None else meta.get("base_model")
        if not base_name:
            raise DoseSegError(f"{weights}: this refiner names no catalogue base model; it cannot be loaded")
        base = load_dose_model(base_name, device)
        if base.refiner is not None:
            raise DoseSegError(f"dose model '{base_name}', the base of a refiner, is itself a refiner (catalogue error)")
        return replace(base, entry=entry, refiner=refiner)
    net, meta, entry, torch_device = load_network("dose", DoseNet, DoseNetConfig, name, weights, device)
    return DoseModel(net, entry, _patch(meta, weights or entry.file), torch_device, amp=torch_device.type == "cuda")


def _is_refiner(weights: Path) -> bool:
    """Whether a user's best.pt holds a refiner (its stored configuration has a correction scale)."""
    import torch

    if not Path(weights).is_file():
        raise DoseSegError(f"{weights}: dose weights not found")
    checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    return isinstance(checkpoint, dict) and "correction_gy" in checkpoint.get("config", {})


def working_grid(ct: Volume) -> Volume | None:
    """A grid at the trained voxel size covering the CT, or None when the CT's spacing is fine as is."""
    spacing = np.asarray(ct.spacing)
    if np.all(spacing >= TRAINED_SPACING_MIN) and np.all(spacing <= TRAINED_SPACING_MAX):
        return None
    working = np.asarray(WORKING_SPACING)
    shape = np.maximum(np.round(spacing * np.asarray(ct.shape) / working).astype(int), 1)
    centre = np.asarray(ct.origin) + ct.direction @ (spacing * (np.asarray(ct.shape) - 1) / 2)
    first = centre - ct.direction @ (working * (shape - 1) / 2)
    return Volume(np.zeros(tuple(shape), np.int16), WORKING_SPACING, tuple(first), ct.direction)


def _on_grid(case: Case, grid: Volume) -> Case:
    ct = resample(case.ct, grid, "linear", -1000.0)
    return replace(
        case,
        ct=ct.with_array(ct.array.astype(np.float32)),
        structures={n: resample_mask(m, grid) for n, m in case.structures.items()},
        possible_dose_mask=resample_mask(case.possible_dose_mask, grid),
        dose=None,
    )


def _refine(model: DoseModel, first: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """The refiner's correction of the base dose ``first`` on one box (on the model's current device)."""
    from DoseSegLib.models.dose.refine_net import refine_box

    def run() -> np.ndarray:
        model.refiner.to(model.device)
        return refine_box(model.refiner, first, inputs, model.device)

    return cpu_if_out_of_memory(model, run)


def predict_case_dose(model: DoseModel, case: Case, tta: bool = False) -> Volume:
    """Predicted dose in Gy on the CT grid of an aligned ``case`` (see alignment.align_case).

    A CT whose voxel size lies outside the trained range is resampled to the model's
    working spacing, predicted there and the dose resampled back onto the CT grid.
    """
    from DoseSegLib.models.dose.inference import predict_box

    ignored = sorted(n for n in case.structures if n not in OARS and n not in case.targets)
    if ignored:
        log.warning("structures not used by the dose model (not an OAR it knows nor PTV<dose>): %s",
                    ", ".join(ignored))
    grid = working_grid(case.ct)
    work = case if grid is None else _on_grid(case, grid)
    if grid is not None:
        log.info("CT spacing %s outside the trained range: predicting at %s mm", case.ct.spacing, WORKING_SPACING)
    inputs = dose_input_channels(work)
    box = mask_box(work.possible_dose_mask.array, BOX_MARGIN)
    dose = np.zeros(work.ct.shape, np.float32)
    dose[box] = cpu_if_out_of_memory(
        model, lambda: predict_box(model.net, inputs[(slice(None), *box)], model.patch, model.device, tta, model.amp))
    if model.refiner is not None:
        dose[box] = _refine(model, dose[box], inputs[(slice(None), *box)])
    predicted = work.ct.with_array(dose)
    if grid is None:
        return predicted
    back = resample(predicted, case.ct, "linear", 0.0).array
    return case.ct.with_array(np.clip(back, 0, None) * case.possible_dose_mask.array)
