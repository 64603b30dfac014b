"""Preprocessed training arrays: each patient's inputs and dose cropped to the possible-dose box."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import OARS
from DoseSegLib.core.volume import mask_box
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.common import patient_cache
from DoseSegLib.models.common.arrays import BOX_MARGIN
from DoseSegLib.models.dose.inputs import dose_input_channels


def preprocess_patient(folder: Path, oars: Sequence[str] = OARS) -> dict[str, np.ndarray]:
    """Inputs (float16; ``oars``' channels) and dose (float32) of one patient, cropped to its possible-dose box,
    and the box."""
    case = align_case(read_patient(folder))
    box = mask_box(case.require_possible_dose_mask().array, BOX_MARGIN)
    inputs = dose_input_channels(case, oars)[(slice(None), *box)]
    dose = case.require_dose().array[box].astype(np.float32)
    return {"inputs": inputs.astype(np.float16), "dose": dose, "box": np.array([[s.start, s.stop] for s in box])}


def build_cache(folders: list[Path], cache_dir: Path, workers: int | None = None,
                oars: Sequence[str] = OARS) -> list[Path]:
    """``cache_dir/<split>_<patient>[_<key>].npz`` of every folder (in parallel, up to 8 processes), in order;
    the key names a site's organs other than OpenKBP's."""
    workers = workers or min(8, os.cpu_count() or 1)
    key = "" if tuple(oars) == OARS else patient_cache.options_key(list(oars))
    return patient_cache.build_cache(folders, cache_dir, partial(preprocess_patient, oars=tuple(oars)), key=key,
                                     workers=workers)
