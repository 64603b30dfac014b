"""Put trained weights into a models folder and (re)write their catalogue entry with the sha256.

Used by ``doseseg publish-model`` (the user models directory) and by ``scripts/publish_model.py``
(the bundled Resources/Models). The catalogue entry is written last, atomically (a partial file,
then renamed): a reader never sees half an entry, nor an entry whose files are not all there.
``doseseg publish-model`` writes a model's files (weights, card, calibration sidecars) in a
:func:`staging` folder first and moves them in with :func:`commit`, which writes the entry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common.catalogue import ModelEntry, read_catalogue, sha256_of

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # also its file names: nothing else
CATALOGUE = "catalogue.json"
# The files ``doseseg publish-model`` writes for model NAME: NAME + each of these (weights, card, calibration
# sidecars of run.calibration: uncertainty with its difficulty, applicability, prescription convention).
MODEL_FILES = (".pt", ".md", ".uncertainty.json", ".applicability.json", ".prescription.json")


def check_name(name: str) -> str:
    """A model name that is safe as a file name (letters, digits, . _ -; at most 64)."""
    if not MODEL_NAME.match(name) or name.endswith((".pt", ".md", ".json")):
        raise DoseSegError(f"model name '{name}': use letters, digits, '.', '_' and '-' only (at most 64, "
                           "starting with a letter or digit), e.g. clinic-hn-dose-2026")
    return name


def check_catalogue(folder: Path) -> None:
    """Refuse to extend a damaged ``folder/catalogue.json`` (call it before anything is written)."""
    if (folder / CATALOGUE).is_file():
        read_catalogue(folder)


def write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def copy_weights(weights: Path, target: Path, half: bool = False) -> None:
    """``weights`` to ``target`` (float weights stored as float16 with ``half``), atomically."""
    partial = target.with_name(f".{target.name}.partial")
    if half:
        import torch

        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        checkpoint["state_dict"] = {k: v.half() if v.is_floating_point() else v
                                    for k, v in checkpoint["state_dict"].items()}
        torch.save(checkpoint, partial)
    else:
        shutil.copyfile(weights, partial)
    os.replace(partial, target)


def catalogue_row(weights: Path, name: str, task: str, version: str, card: str, *, default: bool = False,
                  base: str = "", site: str = "", structures: Sequence[str] = (),
                  scores: dict[str, float] | None = None) -> dict:
    """The catalogue row of model ``name`` whose weights are ``weights`` (its file name and sha256)."""
    return {"name": name, "task": task, "file": weights.name, "sha256": sha256_of(weights), "version": version,
            "card": card, "default": default, **({"base": base} if base else {}), **({"site": site} if site else {}),
            **({"structures": list(structures)} if structures else {}), **({"scores": scores} if scores else {})}


def add_to_catalogue(folder: Path, row: dict) -> ModelEntry:
    """Add (or replace, by name) ``row`` in ``folder/catalogue.json``, atomically; a default row takes the
    default from the task's other models. Returns its entry."""
    catalogue = folder / CATALOGUE
    rows = json.loads(catalogue.read_text())["models"] if catalogue.is_file() else []
    rows = [other for other in rows if other["name"] != row["name"]]
    if row["default"]:
        for other in rows:
            if other["task"] == row["task"]:
                other["default"] = False
    write_atomic(catalogue, json.dumps({"models": [*rows, row]}, indent=2) + "\n")
    return next(entry for entry in read_catalogue(folder) if entry.name == row["name"])


def publish_weights(weights: Path, folder: Path, name: str, task: str, version: str, card: str, *,
                    default: bool = False, half: bool = False, base: str = "", site: str = "",
                    structures: Sequence[str] = (), scores: dict[str, float] | None = None) -> ModelEntry:
    """Copy ``weights`` to ``folder/<name>.pt``, then add (or replace) its entry in ``folder/catalogue.json``.

    Args:
        card: the model card's file name in ``folder``.
        default: make it the task's default (the others of the task lose it).
        half: store float weights as float16 (loaded back into the float32 network).
        base: a refiner's base model; site, structures, scores: shown by ``doseseg models``.
    """
    check_name(name)
    check_catalogue(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.pt"
    copy_weights(weights, target, half)
    return add_to_catalogue(folder, catalogue_row(target, name, task, version, card, default=default, base=base,
                                                  site=site, structures=structures, scores=scores))


@contextmanager
def staging(folder: Path, name: str) -> Iterator[Path]:
    """A new hidden folder inside ``folder`` for model ``name``'s files until :func:`commit`; it is removed with
    whatever is left in it when the block ends, by an error or not."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{name}.publishing-", dir=folder))
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def commit(staged: Path, folder: Path, row: dict) -> ModelEntry:
    """Move the files of ``staged`` into ``folder``, then add ``row`` to its catalogue (:func:`add_to_catalogue`).

    A file of the same name already in ``folder`` (a replaced model's) is set aside in ``staged`` until the
    catalogue is written, and so is every other file of the replaced model that this publish does not write
    (``<name>`` + one of :data:`MODEL_FILES`: a calibration sidecar the new weights would otherwise inherit).
    When a move or the catalogue fails, the moved files are taken out again and the set-aside ones put back,
    so ``folder`` is as before.
    """
    aside = staged / ".replaced"
    aside.mkdir()
    incoming = sorted(path for path in staged.iterdir() if path.is_file())
    moved: list[tuple[Path, Path | None]] = []  # (target in folder, the file it replaced, set aside)
    try:
        for stale in _stale_files(folder, row["name"], {path.name for path in incoming}):
            os.replace(stale, aside / stale.name)
            moved.append((stale, aside / stale.name))
        for source in incoming:
            target = folder / source.name
            replaced = aside / source.name if target.exists() else None
            if replaced is not None:
                os.replace(target, replaced)
            moved.append((target, replaced))
            os.replace(source, target)
        return add_to_catalogue(folder, row)
    except BaseException:
        for target, replaced in reversed(moved):
            if replaced is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(replaced, target)
        raise


def _stale_files(folder: Path, name: str, written: set[str]) -> list[Path]:
    """The files of catalogued model ``name`` in ``folder`` (``name`` + :data:`MODEL_FILES`) not in ``written``;
    none when ``folder``'s catalogue has no model ``name`` (nothing of it was published there)."""
    if not (folder / CATALOGUE).is_file() or not any(entry.name == name for entry in read_catalogue(folder)):
        return []
    files = (folder / f"{name}{suffix}" for suffix in MODEL_FILES)
    return [path for path in files if path.name not in written and path.is_file() and not path.is_symlink()]
