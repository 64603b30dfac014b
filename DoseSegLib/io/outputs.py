"""Safe output folders: build results in a temporary hidden folder, then move them into place.

One rule for every command (:func:`check_output_dir`, applied again by :func:`staged_output`):

- the output may not equal, contain or lie inside any input;
- an existing, non-empty output is replaced only with ``force``, and only the files DoseSeg wrote
  there, at any depth: the marker file :data:`MARKER` records each one's size and sha256, and a
  file that is not recorded or no longer matches (a user's note, an edited table, a forged marker)
  is never deleted: the run is refused with the list of those files;
- the final move is checked under a lock: when another run wrote the folder meanwhile,
  this run fails and the other run's results are kept; at every instant the old or the new results
  are whole on disk (see :mod:`DoseSegLib.io.output_swap`);
- an output folder that is a mount point is written inside (it cannot be renamed);
- a failure, Ctrl-C or SIGTERM leaves the output as it was, and a run that produced no file
  creates no output folder; partial folders of this host's processes that died (SIGKILL, power
  loss) are swept by the next run into the same parent.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.output_marker import (
    MARKER,
    STAGING,
    Inventory,
    inventory,
    read_marker,
    remove_ours,
    walk,
    write_marker,
)
from DoseSegLib.io.output_swap import make_hidden, replace_entries, replace_folder, sweep_stale

__all__ = ["MARKER", "check_output_dir", "staged_output", "sweep_stale"]
log = logging.getLogger(__name__)
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _state(out_dir: Path) -> str | None:
    """What the output folder holds now: None (absent or empty), its marker's run id, or ``foreign``."""
    if not out_dir.is_dir():
        return None
    files, folders = walk(out_dir)
    if not files and not folders:
        return None
    marker = read_marker(out_dir)
    return str(marker.get("run_id")) if marker else "foreign"


def _listed(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def check_output_dir(out_dir: str | Path, force: bool, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output folder that overlaps an input, or that holds anything but replaceable results.

    Args:
        out_dir: the output folder.
        force: replace an existing output folder holding DoseSeg results.
        inputs: every file or folder the command reads; the output may be neither one of
            them, nor inside one, nor contain one (``None`` entries are ignored).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DoseSegError(f"{out_dir}: output path exists and is not a folder (choose a folder path)")
    for parent in out_dir.absolute().parents:
        if parent.exists() and not parent.is_dir():
            raise DoseSegError(f"{out_dir}: {parent} is a file, not a folder (choose an output under a folder)")
    resolved = out_dir.resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if resolved.is_relative_to(source) or source.is_relative_to(resolved):
            raise DoseSegError(f"{out_dir}: output folder overlaps the input {source} (choose a folder outside it)")
    if _state(out_dir) is None:
        return
    if not force:
        raise DoseSegError(f"{out_dir}: output folder already holds results (choose another or use --force)")
    _check_foreign(out_dir)


def _check_foreign(out_dir: Path) -> Inventory:
    """The output's inventory; a DoseSegError listing the files DoseSeg did not write (or that changed)."""
    found = inventory(out_dir)
    if found.foreign:
        raise DoseSegError(f"{out_dir}: --force replaces only the files DoseSeg wrote, but the folder holds files "
                           f"DoseSeg did not write: {_listed(found.foreign)} (added, edited since, or written by an "
                           "older DoseSeg; move them away or choose another output folder)")
    return found


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (so cleanup runs), when it had no handler."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """An exclusive advisory lock on the parent folder (POSIX), held for the final move."""
    try:
        import fcntl
    except ImportError:  # Windows: the run-id check alone
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _move_into_place(
    staging: Path, out_dir: Path, expected: str | None, force: bool, inputs: list[str | Path | None]
) -> None:
    """Replace ``out_dir`` by ``staging`` unless another run changed ``out_dir`` since this one started;
    then delete the old results (only the files DoseSeg wrote; anything else is kept and named)."""
    with _parent_lock(out_dir.parent):
        if _state(out_dir) != expected:
            raise DoseSegError(f"{out_dir}: another run wrote this output folder while this one ran; its results "
                               "were kept and this run's discarded (run again, or choose another output folder)")
        check_output_dir(out_dir, force, inputs)
        found = _check_foreign(out_dir) if out_dir.is_dir() else None
        if os.path.ismount(out_dir):
            tops = sorted({name.split("/")[0] for name in [*found.ours, *found.folders]}) if found else []
            old = replace_entries(staging, out_dir, [*tops, *([MARKER] if (out_dir / MARKER).exists() else [])])
        else:
            old = replace_folder(staging, out_dir)
    if old is not None and found is not None:
        try:
            _discard_old(old, found, out_dir)
        except OSError as exc:  # the new results are in place; the old ones stay where they are
            log.warning("%s: the previous results could not be removed from %s (%s)", out_dir, old, exc.strerror)


def _discard_old(old: Path, found: Inventory, out_dir: Path) -> None:
    """Delete the old results' verified files; anything that appeared meanwhile is kept, visibly."""
    left = remove_ours(old, found)
    if left:
        kept = (out_dir if os.path.ismount(out_dir) else out_dir.parent) / f"{out_dir.name}.kept-{uuid.uuid4().hex[:8]}"
        old.rename(kept)
        log.warning("%s: files that appeared in the old results during the run were kept in %s: %s",
                    out_dir, kept, _listed(left))
    else:
        old.rmdir()
    backup = old.parent
    if old.name == "old" and STAGING.match(backup.name):  # the hidden backup folder around it
        shutil.rmtree(backup, ignore_errors=True)


def _make_staging(out_dir: Path) -> Path:
    """The hidden staging folder: beside ``out_dir``, or inside it when it is a mount point."""
    inside = os.path.ismount(out_dir)
    try:
        return make_hidden(out_dir if inside else out_dir.parent, out_dir.name, "partial")
    except OSError as exc:
        raise DoseSegError(f"{out_dir}: cannot write the output folder ({exc.strerror or exc}); choose another "
                           "output folder") from exc


@contextlib.contextmanager
def staged_output(out_dir: str | Path, force: bool, inputs: Iterable[str | Path | None]) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out_dir``, on any failure it is removed.

    Nothing is ever written outside ``out_dir``'s parent, and a failure, Ctrl-C or SIGTERM
    leaves ``out_dir`` exactly as it was. ``force`` and ``inputs`` follow :func:`check_output_dir`.
    """
    out_dir = Path(out_dir).absolute()
    inputs = list(inputs)
    check_output_dir(out_dir, force, inputs)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DoseSegError(f"{out_dir.parent}: cannot create the output's parent folder ({exc.strerror})") from exc
    with _parent_lock(out_dir.parent):
        swept = sweep_stale(out_dir.parent) + (sweep_stale(out_dir) if os.path.ismount(out_dir) else [])
    if swept:
        check_output_dir(out_dir, force, inputs)  # again: a sweep may have put a killed run's results back
    expected = _state(out_dir)
    run_id = uuid.uuid4().hex
    staging = _make_staging(out_dir)
    try:
        with _sigterm_as_interrupt():
            try:
                yield staging
            except OSError as exc:  # full disk, permissions: name the output file, not the hidden staging one
                writing = str(exc.filename or "").startswith(str(staging)) or exc.errno in _WRITE_ERRORS
                if not writing:
                    raise
                where = str(exc.filename or staging).replace(str(staging), str(out_dir))
                raise DoseSegError(f"{where}: cannot write the output ({exc.strerror or exc}); free space or "
                                   f"choose another output folder") from exc
            if not walk(staging)[0]:
                log.info("%s: nothing was written; the output folder was left as it was", out_dir)
                return
            try:
                write_marker(staging, run_id)
                staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; results get the user's usual mode
                _move_into_place(staging, out_dir, expected, force, inputs)
            except OSError as exc:
                raise DoseSegError(f"{out_dir}: cannot put the results in place ({exc.strerror or exc}); the "
                                   "output folder was left as it was (choose another output folder)") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
