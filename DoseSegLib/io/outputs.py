"""Safe output folders: build results in a temporary sibling folder, then move into place.

One rule for every command (:func:`check_output_dir`, applied again by :func:`staged_output`):

- the output may not equal, contain or lie inside any input;
- an existing, non-empty output is replaced only with ``force`` and only when it holds
  DoseSeg results (the marker file :data:`MARKER` written into every output folder lists
  them); anything else is refused with the list of what is in the way;
- the final move is checked under a lock: when another run wrote the folder meanwhile,
  this run fails and the other run's results are kept;
- a failure, Ctrl-C or SIGTERM leaves the output as it was; partial folders of processes
  that died (SIGKILL, power loss) are swept by the next run into the same parent.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.version import __version__

MARKER = ".doseseg-output.json"
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_STAGING = re.compile(r"^\..+\.(?:partial|old)-(\d+)-[^/]+$")


def _state(out_dir: Path) -> str | None:
    """What the output folder holds now: None (absent or empty) or its marker's run id."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return None
    try:
        return str(json.loads((out_dir / MARKER).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return "foreign"


def _foreign_entries(out_dir: Path) -> list[str]:
    """Entries of an existing output folder that DoseSeg did not write there."""
    entries = sorted(p.name for p in out_dir.iterdir())
    try:
        ours = set(json.loads((out_dir / MARKER).read_text())["entries"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        return entries
    return [name for name in entries if name not in ours]


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
    for source in filter(None, inputs):
        source = Path(source).resolve()
        if resolved.is_relative_to(source) or source.is_relative_to(resolved):
            raise DoseSegError(f"{out_dir}: output folder overlaps the input {source} (choose a folder outside it)")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise DoseSegError(f"{out_dir}: output folder already holds results (choose another or use --force)")
    foreign = _foreign_entries(out_dir)
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
        raise DoseSegError(f"{out_dir}: --force replaces only DoseSeg results, but the folder holds files DoseSeg "
                           f"did not write: {shown} (move them away or choose another output folder)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def sweep_stale(parent: Path) -> list[Path]:
    """Remove the hidden staging and backup folders left in ``parent`` by processes that no longer run."""
    removed = []
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        match = _STAGING.match(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


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


def _write_marker(staging: Path, run_id: str) -> None:
    entries = sorted(p.name for p in staging.iterdir() if p.name != MARKER)
    marker = {"doseseg_version": __version__, "run_id": run_id,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "entries": entries}
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _move_into_place(
    staging: Path, out_dir: Path, expected: str | None, force: bool, inputs: list[str | Path | None]
) -> None:
    """Replace ``out_dir`` by ``staging`` unless another run changed ``out_dir`` since this one started."""
    with _parent_lock(out_dir.parent):
        if _state(out_dir) != expected:
            raise DoseSegError(f"{out_dir}: another run wrote this output folder while this one ran; its results "
                               "were kept and this run's discarded (run again, or choose another output folder)")
        check_output_dir(out_dir, force, inputs)
        if out_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
            out_dir.rename(backup / "old")
            staging.rename(out_dir)
            shutil.rmtree(backup)
        else:
            staging.rename(out_dir)


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
    sweep_stale(out_dir.parent)
    expected = _state(out_dir)
    run_id = uuid.uuid4().hex
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-{os.getpid()}-", dir=out_dir.parent))
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
            _write_marker(staging, run_id)
            staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; results get the user's usual mode
            _move_into_place(staging, out_dir, expected, force, inputs)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
