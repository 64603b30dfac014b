"""Predict a patient's 3D dose with the bundled network (console API and CLI step)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device
from DoseSegLib.core.orientation import Reorientation
from DoseSegLib.core.volume import Volume, mask_box
from DoseSegLib.models.common.arrays import BOX_MARGIN
from DoseSegLib.models.common.catalogue import load_checkpoint, load_network
from DoseSegLib.models.common.devices import cpu_if_out_of_memory
from DoseSegLib.models.common.grid import WORKING_SPACING, working_grid
from DoseSegLib.models.common.handle import ModelHandle
from DoseSegLib.models.dose.inputs import dose_input_channels

if TYPE_CHECKING:
    import torch

    from DoseSegLib.models.common.net_config import StoredConfig
    from DoseSegLib.models.dose.net import DoseNet
    from DoseSegLib.models.dose.refine_net import RefineNet

log = logging.getLogger(__name__)


@dataclass
class DoseModel(ModelHandle):
    """A loaded dose network and its sliding-window size (the training patch).

    ``refiner``, when present, is a ``refine_net.RefineNet`` that corrects the network's prediction
    (a catalogue entry with a ``base``, or a train-dose-refiner best.pt); ``net`` is then the base
    model's network. ``oars`` are the organs of its input channels and ``site`` the site it was
    trained for (a clinic's cohort; '' for OpenKBP's head and neck).
    """

    TASK = "dose"

    net: DoseNet
    patch: tuple[int, int, int]
    refiner: RefineNet | None = None
    oars: tuple[str, ...] = OARS
    site: str = ""

    @staticmethod
    def network_classes() -> tuple[type[torch.nn.Module], type[StoredConfig]]:
        from DoseSegLib.models.dose.net import DoseNet, DoseNetConfig

        return DoseNet, DoseNetConfig

    @staticmethod
    def from_meta(meta: dict) -> dict:
        return {"patch": tuple(meta["patch"]), "oars": tuple(meta.get("oars", OARS)), "site": meta.get("site", "")}


def load_dose_model(name: str | None = None, device: Device | str = Device.AUTO,
                    weights: Path | None = None) -> DoseModel:
    """Load a dose model onto ``device`` (networks in eval mode; see :meth:`ModelHandle.load`).

    A refiner (a catalogue entry with a ``base``, or a train-dose-refiner best.pt) loads its base
    model from the catalogue too, checked the same way.
    """
    from DoseSegLib.models.common.catalogue import find_model
    from DoseSegLib.models.dose.refine_net import RefineNet, RefineNetConfig

    if (weights is None and find_model("dose", name).base) or (weights is not None and _is_refiner(weights)):
        refiner, meta, entry, _ = load_network("dose", RefineNet, RefineNetConfig, name, weights, device)
        base_name = entry.base if entry is not None else meta.get("base_model")
        if not base_name:
            raise DoseSegError(f"{weights}: this refiner names no catalogue base model; it cannot be loaded")
        base = load_dose_model(base_name, device)
        if base.refiner is not None:
            raise DoseSegError(f"dose model '{base_name}', the base of a refiner, is itself a refiner "
                               "(catalogue error)")
        return replace(base, entry=entry, refiner=refiner)
    return DoseModel.load(name, device, weights)


def _is_refiner(weights: Path) -> bool:
    """Whether a user's best.pt holds a refiner (its stored configuration has a correction scale)."""
    checkpoint, _ = load_checkpoint("dose", weights=weights)  # one-line errors for what is not a weights file
    return "correction_gy" in checkpoint["config"]


def case_on_grid(case: Case, grid: Volume) -> Case:
    """An aligned ``case`` resampled onto ``grid`` (the model's working grid): CT linear, masks nearest."""
    ct = resample(case.ct, grid, "linear", -1000.0)
    return replace(
        case,
        ct=ct.with_array(ct.array.astype(np.float32)),
        structures={n: resample_mask(m, grid) for n, m in case.structures.items()},
        possible_dose_mask=resample_mask(case.require_possible_dose_mask(), grid),
        dose=None,
    )


def _refine(model: DoseModel, first: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """The refiner's correction of the base dose ``first`` on one box (on the model's current device)."""
    from DoseSegLib.models.dose.refine_net import refine_box

    refiner = model.refiner
    assert refiner is not None, "only a model with a refiner is refined"

    def run() -> np.ndarray:
        refiner.to(model.device)
        return refine_box(refiner, first, inputs, model.device)

    return cpu_if_out_of_memory(model, run)


@dataclass
class ModelGrid:
    """Where the dose network sees an aligned case: canonical voxel order (see ``core.orientation``),
    the working grid when the CT's voxel size lies outside the trained range, the body's box.

    Built by :func:`prepare_case`; the steps of a prediction are ``prepare_case`` ->
    ``dose_input_channels(grid.work)`` (or ``LiveInputs``) -> :func:`predict_box_dose` on
    ``grid.box`` -> :meth:`to_ct_grid`, shared by ``predict_case_dose`` and the what-if session.
    """

    ct: Volume  # the case's CT, stored order (the output grid)
    orientation: Reorientation
    canonical_ct: Volume
    canonical_body: np.ndarray  # possible-dose mask on canonical_ct
    grid: Volume | None  # the working grid, None when the CT's own grid is used
    work: Case  # the canonical case on the network's grid
    box: tuple[slice, ...]  # the possible-dose box (with margin) on the network's grid

    def mask_on_grid(self, mask: Volume) -> Volume:
        """A mask on the CT grid (stored order) as the network sees it."""
        canonical = self.orientation.to_canonical(mask)
        return canonical if self.grid is None else resample_mask(canonical, self.grid)

    def in_box(self, box_array: np.ndarray) -> np.ndarray:
        """An array of ``box``'s shape placed in a zero array of the network's grid."""
        full = np.zeros(self.work.ct.shape, np.float32)
        full[self.box] = box_array
        return full

    def to_ct_grid(self, array: np.ndarray, clip: bool = True) -> Volume:
        """An array on the network's grid as a Volume on the case's CT grid (stored order).

        ``clip``: a dose, kept >= 0 and inside the possible-dose mask after resampling (False for
        other maps, e.g. a sensitivity)."""
        canonical = self.work.ct.with_array(array.astype(np.float32, copy=False))
        if self.grid is not None:
            back = resample(canonical, self.canonical_ct, "linear", 0.0).array  # a new float32 array
            if clip:
                np.clip(back, 0, None, out=back)
                back *= self.canonical_body
            canonical = self.canonical_ct.with_array(back)
        return self.orientation.from_canonical(canonical, self.ct)


def prepare_case(case: Case, oars: Sequence[str] = OARS) -> ModelGrid:
    """An aligned ``case`` (see alignment.align_case) on the dose network's grid (see :class:`ModelGrid`);
    ``oars``: the model's organs (for the warning about the structures it does not use); one of them given a
    target dose is refused."""
    organs = [n for n in case.targets if n in oars]
    if organs:
        raise DoseSegError(f"patient '{case.name}': {', '.join(organs)} is an organ at risk of the dose model, not a "
                           "target: --prescription gives target doses")
    ignored = sorted(n for n in case.structures if n not in oars and n not in case.targets)
    if ignored:
        log.warning("structures not used by the dose model (not an OAR it knows nor PTV<dose>): %s",
                    ", ".join(ignored))
    orientation = Reorientation.of(case.ct)
    canonical = orientation.case_to_canonical(case)
    possible = canonical.require_possible_dose_mask().array
    grid = working_grid(canonical.ct, possible)
    work = canonical if grid is None else case_on_grid(canonical, grid)
    if grid is not None:
        log.info("CT spacing %s outside the trained range: predicting at %s mm", case.ct.spacing, WORKING_SPACING)
    box = mask_box(work.require_possible_dose_mask().array, BOX_MARGIN)
    return ModelGrid(case.ct, orientation, canonical.ct, possible, grid, work, box)


def predict_box_dose(model: DoseModel, inputs: np.ndarray, tta: bool = False) -> np.ndarray:
    """Dose (Gy) of channels-first ``inputs`` of one box: the network, then the refiner if the model has one."""
    from DoseSegLib.models.dose.inference import predict_box

    dose = cpu_if_out_of_memory(
        model, lambda: predict_box(model.net, inputs, model.patch, model.device, tta, model.amp))
    return dose if model.refiner is None else _refine(model, dose, inputs)


def predict_case_dose(model: DoseModel, case: Case, tta: bool = False) -> Volume:
    """Predicted dose in Gy on the CT grid of an aligned ``case`` (see alignment.align_case).

    The network sees the case in canonical voxel order (see ``core.orientation``), whatever
    the CT's stored axis order; a CT whose voxel size lies outside the trained range is
    resampled to the model's working spacing, predicted there and the dose resampled back.
    """
    grid = prepare_case(case, model.oars)
    inputs = dose_input_channels(grid.work, model.oars)[(slice(None), *grid.box)]
    return grid.to_ct_grid(grid.in_box(predict_box_dose(model, inputs, tta)))
