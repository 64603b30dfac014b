"""The final move of staged results, and the sweep of what dead runs left behind.

- The swap: ``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+, glibc 2.28+) exchanges the staged folder and
  the old output in one step. Elsewhere the old output is first moved into a hidden backup folder
  (``.<name>.old-<host>-<pid>-<random>/old``), then the staged folder into place; a process killed
  in between leaves the old results whole in the backup, and the next run puts them back.
- Staging and backup names carry the host and the process id; a run sweeps only the folders of its
  own host's dead processes (cohort shards on other nodes share the parent folder), and never
  deletes a backup that is the only copy of a result: it restores it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from DoseSegLib.io.output_marker import MARKER, STAGING

log = logging.getLogger(__name__)
ORIGIN = "origin.json"  # in a backup folder: the name of the output its ``old`` folder came from
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def host_tag() -> str:
    """This machine's name as it appears in staging names (letters, digits and ``_``)."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


def make_hidden(parent: Path, name: str, kind: str) -> Path:
    """A new private hidden folder ``.<name>.<kind>-<host>-<pid>-<random>`` in ``parent``."""
    short = name if len(name.encode()) <= 60 else name.encode()[:60].decode(errors="ignore")
    return Path(tempfile.mkdtemp(prefix=f".{short}.{kind}-{host_tag()}-{os.getpid()}-", dir=parent))


def _renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def exchange(first: Path, second: Path) -> bool:
    """Swap two folders in one atomic step; False when the system or file system cannot."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:  # type: ignore[operator]
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _backup(out_dir: Path, inside: bool) -> Path:
    """A hidden backup folder for ``out_dir``'s old results (in it when it is a mount point)."""
    backup = make_hidden(out_dir if inside else out_dir.parent, out_dir.name, "old")
    (backup / ORIGIN).write_text(json.dumps({"name": out_dir.name, "inside": inside}))
    return backup


def replace_entries(staging: Path, out_dir: Path, old: list[str]) -> Path | None:
    """Move ``staging``'s entries into ``out_dir`` (a mount point, which cannot be renamed), the old
    top-level entries ``old`` first into a backup inside it, the marker last; returns the backup."""
    backup = None
    if old:
        backup = _backup(out_dir, inside=True)
        (backup / "old").mkdir()
        for name in sorted(old, key=lambda n: n != MARKER):
            (out_dir / name).rename(backup / "old" / name)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == MARKER):
        entry.rename(out_dir / entry.name)
    staging.rmdir()
    return backup / "old" if backup else None


def replace_folder(staging: Path, out_dir: Path) -> Path | None:
    """Put ``staging`` at ``out_dir``; returns the folder now holding the old results (None when there
    were none). At every instant the old or the new results are whole on disk."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return None
    if exchange(staging, out_dir):
        return staging
    backup = _backup(out_dir, inside=False)
    out_dir.rename(backup / "old")
    staging.rename(out_dir)
    return backup / "old"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _holds_results(folder: Path) -> bool:
    return folder.is_dir() and (folder / MARKER).is_file()


def _origin(backup: Path) -> dict:
    try:
        origin = json.loads((backup / ORIGIN).read_text())
        return origin if isinstance(origin, dict) and isinstance(origin.get("name"), str) else {}
    except (OSError, ValueError):
        return {}


def _target(backup: Path) -> Path | None:
    """The output a backup's ``old`` folder came from (None when its origin is unreadable)."""
    origin = _origin(backup)
    name = origin.get("name", "")
    if origin.get("inside"):
        return backup.parent
    return backup.parent / name if name and Path(name).name == name else None


def _restore(backup: Path, target: Path) -> bool:
    """Put a dead run's backup of ``target`` back in place (the output is gone: it is the only copy); False,
    with a warning naming the backup, when something now stands in its way (the backup is then kept)."""
    old = backup / "old"
    try:
        if target == backup.parent:  # a mount point: the entries went into a backup inside it
            for entry in sorted(old.iterdir(), key=lambda p: p.name == MARKER):
                if not (target / entry.name).exists():
                    entry.rename(target / entry.name)
            if any(old.iterdir()):
                raise FileExistsError(errno.EEXIST, "entries of the same names are in the way", str(target))
        else:
            with contextlib.suppress(OSError):
                target.rmdir()  # an empty folder in its place
            old.rename(target)
    except OSError as exc:
        log.warning("%s: a killed run's previous results are kept in %s: they cannot go back (%s); move them "
                    "where you want them", target, old, exc.strerror or exc)
        return False
    log.warning("%s: restored the results a killed run had moved aside", target)
    return True


def dead_staging(parent: Path) -> Iterator[tuple[Path, str]]:
    """This host's staging and backup folders in ``parent`` whose process is no longer running."""
    if not parent.is_dir():
        return
    host = host_tag()
    for path in parent.iterdir():
        match = STAGING.match(path.name)
        if (match and match["host"] == host and path.is_dir() and not path.is_symlink()
                and not _alive(int(match["pid"]))):
            yield path, match["kind"]


def sweep_stale(parent: Path) -> list[Path]:
    """Clean up after this host's dead runs in ``parent``: partial folders are removed; a backup is
    restored when its output is gone (the only copy), removed when the new results are in place."""
    removed = []
    for path, kind in list(dead_staging(parent)):
        if kind == "old" and (path / "old").is_dir():
            target = _target(path)
            if target is None:
                continue  # cannot tell where it belongs: keep it, it may be the only copy
            if not _holds_results(target) and not _restore(path, target):
                continue  # the only copy: kept
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
