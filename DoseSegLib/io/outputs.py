"""Safe output folders: build results in a temporary sibling folder, then move into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError


def check_output_dir(out_dir: Path, force: bool, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse an output folder that already holds files unless ``force``, or that overlaps an input.

    Args:
        inputs: files or folders read by the command; the output may be neither one of
            them, nor inside one, nor contain one (``None`` entries are ignored).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise DoseSegError(f"{out_dir}: output path exists and is not a folder")
    resolved = out_dir.resolve()
    for source in filter(None, inputs):
        source = Path(source).resolve()
        if resolved.is_relative_to(source) or source.is_relative_to(resolved):
            raise DoseSegError(f"{out_dir}: output folder overlaps the input {source} (choose a folder outside it)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise DoseSegError(f"{out_dir}: output folder already holds results (choose another or use --force)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_output(
    out_dir: str | Path, force: bool = False, inputs: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``out_dir``, on any failure it is removed.

    Nothing is ever written outside ``out_dir``'s parent, and a failure or Ctrl-C
    leaves ``out_dir`` exactly as it was. ``inputs`` are protected as in
    :func:`check_output_dir`.
    """
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, force, inputs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staging
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; results get the user's usual mode
        if out_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(backup / "old")
            staging.rename(out_dir)
            shutil.rmtree(backup)
        else:
            staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
