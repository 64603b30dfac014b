"""``--shard K/N``: the share of a cohort one scheduler array task processes (``doseseg run``,
``predict-dose`` and ``segment``).

Task K of N takes the patients whose position in the list as given (counted from 1, not
re-sorted) is congruent to K modulo N, so N tasks cover the list without overlap.
``--shard auto`` reads a SLURM job array's SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and
SLURM_ARRAY_TASK_COUNT (K = ID - MIN + 1, N = COUNT).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

from DoseSegLib.core.errors import DoseSegError

T = TypeVar("T")
SLURM_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")


def add_shard_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--shard K/N|auto`` to a command that takes a list of patients."""
    parser.add_argument("--shard", metavar="K/N", help="process only patients K, K+N, K+2N, ... of the list "
                        "(a scheduler array task; 'auto' reads SLURM_ARRAY_TASK_*); writes OUTPUT/<patient>/")


def parse_shard(text: str, environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """``(K, N)`` of ``--shard`` text ("K/N" or "auto"); a DoseSegError naming what is wrong otherwise."""
    if text == "auto":
        missing = [name for name in SLURM_VARIABLES if not environ.get(name, "").strip()]
        if missing:
            raise DoseSegError(f"--shard auto: {', '.join(missing)} not set (not in a SLURM array job; "
                               "give --shard K/N)")
        try:
            task, first, count = (int(environ[name]) for name in SLURM_VARIABLES)
        except ValueError:
            raise DoseSegError(f"--shard auto: {'/'.join(environ[n] for n in SLURM_VARIABLES)} "
                               f"({', '.join(SLURM_VARIABLES)}) are not whole numbers") from None
        index = task - first + 1
        if not 1 <= index <= count:
            raise DoseSegError(f"--shard auto: array task {task} is not among {count} tasks from {first} "
                               "(an array with a step or gaps; use --array=1-N, or give --shard K/N)")
        return index, count
    parts = text.split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9]{1,9}", p.strip()) for p in parts):
        raise DoseSegError(f"--shard {text}: expected K/N with whole numbers (e.g. --shard 2/8) or 'auto'")
    index, count = int(parts[0]), int(parts[1])
    if not 1 <= index <= count:
        raise DoseSegError(f"--shard {text}: K must be from 1 to N (e.g. --shard 1/{max(count, 1)})")
    return index, count


def shard_items(items: Sequence[T], index: int, count: int) -> list[T]:
    """The items at positions (from 1) congruent to ``index`` modulo ``count``, in the given order."""
    return list(items[index - 1::count])


def apply_shard(args: argparse.Namespace) -> bool:
    """Keep only this task's share of ``args.patients``; False (after a message) when it is empty.

    Without ``--shard`` nothing changes and it returns True.
    """
    if not getattr(args, "shard", None):
        return True
    index, count = parse_shard(args.shard)
    total = len(args.patients)
    if len({p.name for p in args.patients}) != total:  # on the whole list: shards must not collide either
        raise DoseSegError("two patient folders share a name; their outputs would collide")
    args.patients = shard_items(args.patients, index, count)
    if not args.patients:
        print(f"shard {index}/{count}: no patient ({total} in the list); nothing to do")
        return False
    print(f"shard {index}/{count}: {len(args.patients)} of {total} patients")
    return True
