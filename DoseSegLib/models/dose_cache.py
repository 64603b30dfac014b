"""Preprocessed training arrays: each patient's inputs and dose cropped to the possible-dose box."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..alignment import align_case
from ..io import read_patient
from .dose_inputs import dose_input_channels, mask_box

log = logging.getLogger(__name__)
BOX_MARGIN = 4


def preprocess_patient(folder: Path, cache_dir: Path) -> Path:
    """Write ``cache_dir/<split>_<patient>.npz`` (inputs float16, dose float32, box) once."""
    target = cache_dir / f"{folder.parent.name}_{folder.name}.npz"
    if target.is_file():
        return target
    case = align_case(read_patient(folder))
    box = mask_box(case.possible_dose_mask.array, BOX_MARGIN)
    inputs = dose_input_channels(case)[(slice(None), *box)]
    dose = case.dose.array[box].astype(np.float32)
    partial = target.with_suffix(".tmp.npz")
    np.savez(partial, inputs=inputs.astype(np.float16), dose=dose, box=np.array([[s.start, s.stop] for s in box]))
    partial.rename(target)
    return target


def build_cache(folders: list[Path], cache_dir: Path, workers: int | None = None) -> list[Path]:
    """Preprocess every patient folder (in parallel, up to 8 processes); returns the cache files in order."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(preprocess_patient, folders, [cache_dir] * len(folders)))


def load_cached(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
