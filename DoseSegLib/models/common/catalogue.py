"""The model catalogue: bundled weights, their checksums, and safe loading.

``Resources/Models/catalogue.json`` lists each model (name, task, file, sha256,
version, card). Weights are only ever read with ``torch.load(weights_only=True)``
after their sha256 matches the catalogue. ``DOSESEG_MODELS`` may point to another
folder holding a catalogue.json of the same form.

A user's own models (``doseseg publish-model``) live in the user models directory,
``DOSESEG_MODELS_DIR`` or a per-user data folder (:func:`user_models_dir`), with a
catalogue.json of the same form; they are found by name beside the bundled ones and
checked the same way. A user model never shadows a bundled one nor becomes a default.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device
from DoseSegLib.io.output_marker import sha256_of
from DoseSegLib.models.common.net_config import StoredConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
USER_MODELS_ENV = "DOSESEG_MODELS_DIR"

__all__ = [
    "MODEL_FOLDERS",
    "PACKAGE_DIR",
    "USER_MODELS_ENV",
    "ModelEntry",
    "find_model",
    "load_catalogue",
    "load_checkpoint",
    "load_network",
    "load_weights",
    "models_dir",
    "sha256_of"
]

NetT = TypeVar("NetT", bound="torch.nn.Module")


@dataclass
class ModelEntry:
    """One catalogue row."""

    name: str
    task: str
    file: Path
    sha256: str
    version: str
    card: str = ""
    default: bool = False
    base: str = ""  # a refinement stage: the catalogue model it refines
    site: str = ""
    structures: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    user: bool = False  # from the user models directory (not stored in a catalogue)

    def describe(self) -> dict:
        row = {"name": self.name, "version": self.version, "sha256": self.sha256}
        return {**row, "base": self.base} if self.base else row


PACKAGE_DIR = Path(__file__).resolve().parents[2]
MODEL_FOLDERS = (
    PACKAGE_DIR.parent / "Resources" / "Models",  # a checkout, an editable install, the Slicer extension
    Path(sys.prefix) / "share" / "doseseg" / "Models",  # a wheel (pyproject's data-files)
)


def models_dir() -> Path:
    """Folder of the catalogue: $DOSESEG_MODELS, else the first of :data:`MODEL_FOLDERS` holding one."""
    env = os.environ.get("DOSESEG_MODELS")
    if env:
        return Path(env)
    for folder in MODEL_FOLDERS:
        if (folder / "catalogue.json").is_file():
            return folder
    return MODEL_FOLDERS[0]


def user_models_dir() -> Path:
    """The user's models: $DOSESEG_MODELS_DIR, else ``doseseg/models`` in the per-user data folder
    ($XDG_DATA_HOME or ~/.local/share on Linux, ~/Library/Application Support on macOS, %APPDATA% on Windows)."""
    env = os.environ.get(USER_MODELS_ENV)
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "doseseg" / "models"


def entry_of(row: dict, folder: Path, user: bool = False) -> ModelEntry:
    """The entry of a catalogue row whose file lies in ``folder``."""
    return ModelEntry(**{**row, "file": folder / row["file"], "structures": tuple(row.get("structures", ())),
                         "user": user})


def read_catalogue(folder: Path, user: bool = False) -> list[ModelEntry]:
    """The entries of ``folder/catalogue.json`` (files relative to ``folder``)."""
    path = folder / "catalogue.json"
    try:
        rows = json.loads(path.read_text())["models"]
        return [entry_of(row, folder, user) for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DoseSegError(f"{path}: model catalogue missing or invalid ({exc})") from exc


def load_catalogue(folder: Path | None = None) -> list[ModelEntry]:
    """The catalogue of ``folder``; by default the bundled models and then the user's (see :func:`user_models_dir`;
    a damaged user catalogue is left out with a warning: the bundled models keep working)."""
    if folder is not None:
        return read_catalogue(folder)
    bundled = read_catalogue(models_dir())
    user_folder = user_models_dir()
    if not (user_folder / "catalogue.json").is_file():
        return bundled
    try:
        entries = read_catalogue(user_folder, user=True)
    except DoseSegError as exc:
        log.warning("user models ignored: %s", exc)
        return bundled
    names = {entry.name for entry in bundled}
    user = []
    for entry in entries:
        if entry.name in names:
            log.warning("user model '%s' (%s) has the name of a bundled model: ignored", entry.name, user_folder)
        else:
            user.append(entry)
    return bundled + user


def find_model(task: str, name: str | None = None, folder: Path | None = None) -> ModelEntry:
    """The catalogue entry named ``name`` (or the task's default model, never a user model)."""
    entries = [e for e in load_catalogue(folder) if e.task == task]
    if name is not None:
        match = [e for e in entries if e.name == name]
        if not match:
            known = ", ".join(e.name for e in entries) or "none"
            raise DoseSegError(f"unknown {task} model '{name}' (bundled and user models: {known}; "
                               f"user models in {user_models_dir()})")
        return match[0]
    defaults = [e for e in entries if e.default and not e.user] or [e for e in entries if not e.user]
    if not defaults:
        raise DoseSegError(f"the model catalogue has no {task} model")
    return defaults[0]


def load_weights(entry: ModelEntry, map_location: str = "cpu") -> dict:
    """The checkpoint dict of ``entry``, after verifying its sha256; never unpickles objects."""
    import torch

    if not entry.file.is_file():
        raise DoseSegError(f"{entry.file}: weights of model '{entry.name}' not found")
    actual = sha256_of(entry.file)
    if actual != entry.sha256:
        raise DoseSegError(
            f"{entry.file}: sha256 {actual[:12]}... does not match the catalogue ({entry.sha256[:12]}...); "
            "refusing to load"
        )
    return torch.load(entry.file, map_location=map_location, weights_only=True)


_TRAIN_COMMANDS = {"dose": "train-dose", "segmentation": "train-seg", "features": "train-features"}


def load_checkpoint(task: str, name: str | None = None, weights: Path | None = None) -> tuple[dict, ModelEntry | None]:
    """A catalogue model's checkpoint (sha256 checked) and its entry, or, with ``weights``, a user's
    own training output (weights_only, no checksum) and None."""
    if weights is None:
        entry = find_model(task, name)
        return load_weights(entry), entry
    import torch

    if not Path(weights).is_file():
        raise DoseSegError(f"{weights}: {task} weights not found")
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: not a weights file
        raise DoseSegError(f"{weights}: not a DoseSeg {task} weights file ({type(exc).__name__}); give the "
                           f"best.pt that 'doseseg {_TRAIN_COMMANDS.get(task, 'train')}' wrote") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "config", "meta"} <= set(checkpoint):
        raise DoseSegError(f"{weights}: not a DoseSeg {task} weights file (no state_dict, config and meta)")
    return checkpoint, None


def load_network(task: str, network: type[NetT], config: type[StoredConfig], name: str | None = None,
                 weights: Path | None = None, device: Device | str = Device.AUTO,
                 ) -> tuple[NetT, dict, ModelEntry | None, torch.device]:
    """A network from the catalogue or a weights file (see :func:`load_checkpoint`), in eval mode on ``device``.

    Args:
        network, config: the network class and its config class (with ``from_dict``).
        device: "auto", "cpu" or "cuda".

    Returns:
        The network, the checkpoint's metadata, the catalogue entry (None for a file) and the torch device.
    """
    from DoseSegLib.models.common.devices import select_device

    checkpoint, entry = load_checkpoint(task, name, weights)
    source = weights if entry is None else entry.file
    try:
        net = network(config.from_dict(checkpoint["config"]))
        net.load_state_dict(checkpoint["state_dict"])
        meta = dict(checkpoint["meta"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DoseSegError(f"{source}: not a {task} network's weights file ({type(exc).__name__}: {exc})") from exc
    torch_device = select_device(device)
    net.to(torch_device).eval()
    return net, meta, entry, torch_device


def list_models() -> list[dict]:
    """Every bundled and user model as plain data, for ``doseseg models`` and the Slicer panel's model choice.

    Each dict: name, task, site, structures (list), scores (dict), card (path, "" when none),
    version, source ("bundled" or "user"), default.
    """
    return [{"name": e.name, "task": e.task, "site": e.site, "structures": list(e.structures),
             "scores": dict(e.scores), "card": str(e.file.parent / e.card) if e.card else "", "version": e.version,
             "source": "user" if e.user else "bundled", "default": e.default and not e.user}
            for e in load_catalogue()]
