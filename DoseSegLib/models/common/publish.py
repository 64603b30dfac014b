"""Put trained weights into a models folder and (re)write their catalogue entry with the sha256.

Used by ``doseseg publish-model`` (the user models directory) and by ``scripts/publish_model.py``
(the bundled Resources/Models). The weights file and the catalogue are written atomically
(a partial file, then renamed): a reader never sees half an entry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common.catalogue import ModelEntry, read_catalogue, sha256_of

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # also its file names: nothing else


def check_name(name: str) -> str:
    """A model name that is safe as a file name (letters, digits, . _ -; at most 64)."""
    if not MODEL_NAME.match(name) or name.endswith((".pt", ".md", ".json")):
        raise DoseSegError(f"model name '{name}': use letters, digits, '.', '_' and '-' only (at most 64, "
                           "starting with a letter or digit), e.g. clinic-hn-dose-2026")
    return name


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


def publish_weights(weights: Path, folder: Path, name: str, task: str, version: str, card: str, *,
                    default: bool = False, half: bool = False, base: str = "", site: str = "",
                    structures: Sequence[str] = (), scores: dict[str, float] | None = None) -> ModelEntry:
    """Copy ``weights`` to ``folder/<name>.pt`` and add (or replace) its entry in ``folder/catalogue.json``.

    Args:
        card: the model card's file name in ``folder``.
        default: make it the task's default (the others of the task lose it).
        half: store float weights as float16 (loaded back into the float32 network).
        base: a refiner's base model; site, structures, scores: shown by ``doseseg models``.
    """
    check_name(name)
    catalogue = folder / "catalogue.json"
    if catalogue.is_file():
        read_catalogue(folder)  # refuse to extend a damaged catalogue, before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.pt"
    copy_weights(weights, target, half)
    rows = json.loads(catalogue.read_text())["models"] if catalogue.is_file() else []
    rows = [row for row in rows if row["name"] != name]
    if default:
        for row in rows:
            if row["task"] == task:
                row["default"] = False
    row = {"name": name, "task": task, "file": target.name, "sha256": sha256_of(target), "version": version,
           "card": card, "default": default, **({"base": base} if base else {}), **({"site": site} if site else {}),
           **({"structures": list(structures)} if structures else {}), **({"scores": scores} if scores else {})}
    rows.append(row)
    write_atomic(catalogue, json.dumps({"models": rows}, indent=2) + "\n")
    return next(entry for entry in read_catalogue(folder) if entry.name == name)
