"""NumPy's transparent huge pages, turned off around clinical-size work.

NumPy asks Linux for transparent huge pages on every large array (madvise). On virtual machines
such as this project's 2-core CPU, faulting them in stalled each new clinical-size array for
seconds (a 512 x 512 x 300 ``doseseg run``: 26 s median with a 38 s worst run, against 22.4 s
without), while at 128^3 they save about 0.25 s of the dose prediction. So they are turned off
only around clinical-size work, and never when the user set ``NUMPY_MADVISE_HUGEPAGE``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

LARGE_VOXELS = 16_000_000  # a CT of this many voxels or more is clinical size


def _switch():
    """NumPy's runtime switch (``_set_madvise_hugepage``, returns the previous setting), or None."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, "_set_madvise_hugepage", None)


@contextlib.contextmanager
def huge_pages_off(voxels: int) -> Iterator[bool]:
    """Within, new NumPy arrays get no huge pages when ``voxels`` reach :data:`LARGE_VOXELS` (the
    previous setting restored after); yields whether they were turned off."""
    switch = _switch()
    if switch is None or voxels < LARGE_VOXELS or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield False
        return
    previous = switch(False)
    try:
        yield True
    finally:
        switch(previous)
