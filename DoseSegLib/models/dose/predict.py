"""Predict a patient's 3D dose with the bundled network (console API and CLI step)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.volume import Volume, mask_box
from DoseSegLib.models.common.arrays import BOX_MARGIN
from DoseSegLib.models.common.devices import cpu_if_out_of_memory
from DoseSegLib.models.common.grid import WORKING_SPACING, working_grid
from DoseSegLib.models.common.handle import ModelHandle
from DoseSegLib.models.dose.inputs import dose_input_channels

log = logging.getLogger(__name__)


@dataclass
class DoseModel(ModelHandle):
    """A loaded dose network and its sliding-window size (the training patch)."""

    TASK = "dose"

    patch: tuple[int, int, int]

    @staticmethod
    def network_classes() -> tuple[type, type]:
        from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig

        return DoseNet, DoseNetConfig

    @staticmethod
    def from_meta(meta: dict) -> dict:
        return {"patch": tuple(meta["patch"])}


def load_dose_model(name: str | None = None, device: str = "auto", weights: Path | None = None) -> DoseModel:
    """A dose model (see :meth:`ModelHandle.load`)."""
    return DoseModel.load(name, device, weights)


def _on_grid(case: Case, grid: Volume) -> Case:
    ct = resample(case.ct, grid, "linear", -1000.0)
    return replace(
        case,
        ct=ct.with_array(ct.array.astype(np.float32)),
        structures={n: resample_mask(m, grid) for n, m in case.structures.items()},
        possible_dose_mask=resample_mask(case.possible_dose_mask, grid),
        dose=None,
    )


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
    grid = working_grid(case.ct, case.possible_dose_mask.array)
    work = case if grid is None else _on_grid(case, grid)
    if grid is not None:
        log.info("CT spacing %s outside the trained range: predicting at %s mm", case.ct.spacing, WORKING_SPACING)
    inputs = dose_input_channels(work)
    box = mask_box(work.possible_dose_mask.array, BOX_MARGIN)
    dose = np.zeros(work.ct.shape, np.float32)
    dose[box] = cpu_if_out_of_memory(
        model, lambda: predict_box(model.net, inputs[(slice(None), *box)], model.patch, model.device, tta, model.amp))
    predicted = work.ct.with_array(dose)
    if grid is None:
        return predicted
    back = resample(predicted, case.ct, "linear", 0.0).array  # float32, only the working grid's part
    np.clip(back, 0, None, out=back)
    back *= case.possible_dose_mask.array
    return case.ct.with_array(back)
