"""Training arrays of the dose refiner: each patient's cached dose inputs plus the frozen base model's prediction."""

from __future__ import annotations

import os
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common import patient_cache
from DoseSegLib.models.dose.cache import preprocess_patient


@lru_cache(maxsize=1)
def _base_model(name: str | None, weights: str | None):
    import torch

    from DoseSegLib.models.dose.predict import load_dose_model

    torch.set_num_threads(1)  # one process per core
    return load_dose_model(name, "cpu", Path(weights) if weights else None)


def prepare_patient(folder: Path, base_name: str | None = None,
                    base_weights: str | None = None) -> dict[str, np.ndarray]:
    """The dose cache arrays of ``folder`` plus "first": the base model's dose (Gy, float16) on the same box."""
    from DoseSegLib.models.dose.inference import predict_box

    model = _base_model(base_name, base_weights)
    if model.refiner is not None:
        raise DoseSegError(f"{base_weights}: a refiner's weights; the base must be a train-dose model")
    arrays = preprocess_patient(folder)
    first = predict_box(model.net, arrays["inputs"], model.patch, model.device)
    return {**arrays, "first": first.astype(np.float16)}


def base_key(base_name: str | None, base_weights: str | None) -> str:
    """Cache-file key of a base model: its weights' sha256 (so another base model never reuses a cache)."""
    from DoseSegLib.models.common.catalogue import find_model, sha256_of

    sha = sha256_of(Path(base_weights)) if base_weights else find_model("dose", base_name).sha256
    return patient_cache.options_key({"refine_base": sha})


def build_refine_cache(folders: list[Path], cache_dir: Path, base_name: str | None = None,
                       base_weights: str | None = None, workers: int | None = None) -> list[Path]:
    """``cache_dir/<split>_<patient>_<key>.npz`` with the base prediction of every folder, in order."""
    workers = workers or min(2, os.cpu_count() or 1)
    prepare = partial(prepare_patient, base_name=base_name, base_weights=base_weights)
    return patient_cache.build_cache(folders, cache_dir, prepare, key=base_key(base_name, base_weights),
                                     workers=workers)
