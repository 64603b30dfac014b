"""Shared fixtures: the real-data folder (skipped when absent) and the synthetic phantom."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
from openkbp_csv_helpers import write_csv_patient

from DoseSegLib.core.case import Case
from DoseSegLib.io.phantom import make_phantom, write_phantom_patient

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository; the test is skipped when it is absent."""
    if not (SHARED_DATA / "openkbp").is_dir():
        pytest.skip(f"real OpenKBP data not found at {SHARED_DATA / 'openkbp'} (only present on development machines)")
    return SHARED_DATA


@pytest.fixture
def phantom_case() -> Case:
    """The default phantom, everything on the CT grid."""
    return make_phantom()


@pytest.fixture
def phantom_dir(tmp_path: Path) -> Path:
    """A phantom patient folder (ct, possible_dose_mask, cropped dose and structures) in tmp_path."""
    folder = tmp_path / "phantom"
    write_phantom_patient(folder)
    return folder


@pytest.fixture
def phantom_dataset(tmp_path: Path) -> Path:
    """A tiny training dataset in tmp_path/data: train/pt_1, train/pt_2 and validation/pt_3 (small phantoms)."""
    data = tmp_path / "data"
    for split, seeds in (("train", (1, 2)), ("validation", (3,))):
        for seed in seeds:
            write_phantom_patient(data / split / f"pt_{seed}", shape=(32, 32, 24), spacing=(5.5, 6.5, 4.8), seed=seed)
    return data


def hash_tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` keyed by relative path (folders included as empty)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def tree_hash() -> Callable[[Path], dict[str, str]]:
    """A function hashing a folder's files, to check that inputs are never modified."""
    return hash_tree


@pytest.fixture
def csv_patient(tmp_path: Path) -> Path:
    """A synthetic OpenKBP sparse-CSV patient folder, tmp_path/pt_9 (see openkbp_csv_helpers)."""
    return write_csv_patient(tmp_path / "pt_9")


@pytest.fixture
def tiny_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DOSESEG_MODELS pointing at a tiny test catalogue (a randomly initialised small dose network)."""
    from model_helpers import write_tiny_catalogue  # torch: imported only by the tests that use it

    folder = write_tiny_catalogue(tmp_path / "models")
    monkeypatch.setenv("DOSESEG_MODELS", str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_personal_models(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests never see the developer's own published models (DOSESEG_MODELS_DIR: an empty folder)."""
    monkeypatch.setenv("DOSESEG_MODELS_DIR", str(tmp_path_factory.mktemp("user-models")))


@pytest.fixture
def torch_in_workers() -> None:
    """Skips a test whose worker process loads a model when torch is not installed (scripts/check_py312.sh)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the worker process loads a dose model: torch is not installed for this Python")
