"""Prepared training arrays, one .npz per patient, made once and shared by every run with the same options."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np

from DoseSegLib.models.common import distributed


def options_key(options: object) -> str:
    """A short, stable key of JSON-able ``options`` (part of the cache file names)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


def _target(folder: Path, cache_dir: Path, key: str) -> Path:
    return cache_dir / (f"{folder.parent.name}_{folder.name}" + (f"_{key}" if key else "") + ".npz")


def _cache_one(folder: Path, cache_dir: Path, key: str, prepare: Callable[[Path], dict[str, np.ndarray]]) -> Path:
    target = _target(folder, cache_dir, key)
    if not target.is_file():
        partial_file = target.with_suffix(".tmp.npz")
        np.savez(partial_file, **cast(dict[str, Any], prepare(folder)))  # arrays by name (numpy's stub: Any)
        partial_file.rename(target)  # a file is complete or absent
    return target


def build_cache(folders: list[Path], cache_dir: Path, prepare: Callable[[Path], dict[str, np.ndarray]],
                key: str = "", workers: int = 2) -> list[Path]:
    """``cache_dir/<split>_<patient>[_<key>].npz`` of each folder, in order, made by ``prepare`` where missing.

    Args:
        prepare: a patient folder -> its arrays; picklable (a module-level function or a
            ``functools.partial`` of one), as it runs in ``workers`` processes.
        key: the options the arrays depend on (see :func:`options_key`).

    Under torchrun rank 0 builds the cache while the other ranks wait, then they read it.
    """
    with distributed.main_first():
        if not distributed.is_main():
            return [_target(folder, cache_dir, key) for folder in folders]
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = partial(_cache_one, cache_dir=cache_dir, key=key, prepare=prepare)
        if workers <= 1 or len(folders) <= 1:
            return [work(folder) for folder in folders]
        with ProcessPoolExecutor(min(workers, len(folders))) as pool:
            return list(pool.map(work, folders))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one cache file."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
