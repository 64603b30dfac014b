"""The output marker: which files DoseSeg wrote in an output folder, with their sizes and sha256.

``--force`` replaces a file only when the marker records it and the file on disk still has the
recorded size and sha256: a forged or stale marker, a file added or edited by the user, a link
or a special file is never DoseSeg's, at any depth. Deleting old results removes exactly those
files (and then the folders DoseSeg made, when they are empty); nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from DoseSegLib.core.version import __version__

MARKER = ".doseseg-output.json"
MARKER_FORMAT = 2
# DoseSeg's hidden staging and backup folders: .<name>.<kind>-<host>-<pid>-<random>
STAGING = re.compile(r"^\..*\.(?P<kind>partial|old)-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[a-z0-9_]+$")


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def walk(folder: Path) -> tuple[list[str], list[str]]:
    """Relative POSIX paths of every non-folder entry and every folder under ``folder`` (links not
    followed; DoseSeg's staging folders and the top-level marker left out)."""
    entries, folders = [], []
    for root, dirs, files in os.walk(folder, followlinks=False):
        top = Path(root) == folder
        if top:
            dirs[:] = [d for d in dirs if not STAGING.match(d)]
        relative = Path(root).relative_to(folder)
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                entries.append((relative / name).as_posix())
            else:
                folders.append((relative / name).as_posix())
        entries += [(relative / name).as_posix() for name in files if not (top and name == MARKER)]
    return sorted(entries), sorted(folders)


def write_marker(folder: Path, run_id: str) -> None:
    """Record every file under ``folder`` (size and sha256) and every folder in its marker."""
    files, folders = walk(folder)
    recorded = {}
    for name in files:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            recorded[name] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    marker = {"doseseg_version": __version__, "format": MARKER_FORMAT, "run_id": run_id,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "files": recorded, "folders": folders}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def read_marker(folder: Path) -> dict | None:
    """The marker of ``folder`` when it is one DoseSeg writes (this format), else None."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT:
        return None
    if not isinstance(marker.get("files"), dict) or not isinstance(marker.get("folders"), list):
        return None
    return marker


@dataclass
class Inventory:
    """What an output folder holds: DoseSeg's verified files and folders, and everything else."""

    ours: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    stats: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (inode, size, mtime_ns)


def _matches(path: Path, record: object) -> bool:
    if not isinstance(record, dict) or path.is_symlink() or not path.is_file():
        return False
    try:
        return path.stat().st_size == record.get("size") and sha256_of(path) == record.get("sha256")
    except OSError:
        return False


def inventory(folder: Path) -> Inventory:
    """Sort ``folder``'s entries into DoseSeg's (recorded in a valid marker and unchanged) and foreign ones."""
    marker = read_marker(folder) or {"files": {}, "folders": []}
    files, folders = walk(folder)
    result = Inventory()
    known_folders = {str(name) for name in marker["folders"]}
    for name in files:
        path = folder / name
        if _matches(path, marker["files"].get(name)):
            result.ours.append(name)
            st = path.stat()
            result.stats[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
        else:
            result.foreign.append(name)
    for name in folders:
        (result.folders if name in known_folders else result.foreign).append(name)
    if (folder / MARKER).exists() and read_marker(folder) is None and (files or folders):
        result.foreign.append(MARKER)  # not a marker DoseSeg writes: not ours to delete either
    result.foreign.sort()
    return result


def remove_ours(folder: Path, found: Inventory) -> list[str]:
    """Delete the verified files of ``found`` (when unchanged since), then DoseSeg's empty folders and,
    when nothing else is left, the marker; returns what is left (nothing unless something appeared meanwhile)."""
    for name in found.ours:
        path = folder / name
        try:
            st = path.lstat()
            if (st.st_ino, st.st_size, st.st_mtime_ns) == found.stats[name]:
                path.unlink()
        except OSError:
            continue
    for name in sorted(found.folders, key=lambda n: -n.count("/")):
        try:
            (folder / name).rmdir()
        except OSError:
            continue
    left = [n for n in os.listdir(folder) if n != MARKER]
    if not left:
        (folder / MARKER).unlink(missing_ok=True)
    return left
