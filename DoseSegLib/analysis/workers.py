"""Work spread over fresh Python processes that speak JSON lines and raw volumes over stdin/stdout.

Unlike ``multiprocessing``, nothing of the caller's main script is imported again in a worker, so
a script without an ``if __name__ == "__main__"`` guard (or Slicer's console) is safe, and no file
is written: volumes travel as a JSON header line followed by their C-order bytes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

LIBRARY_ROOT = Path(__file__).resolve().parents[2]  # the folder holding DoseSegLib


def can_start_workers() -> bool:
    """Whether this process runs a plain Python interpreter that can start copies of itself
    (not, e.g., inside Slicer's application, whose ``sys.executable`` is the application)."""
    return Path(sys.executable).name.lower().startswith("python")


def write_message(stream: BinaryIO, message: dict) -> None:
    """One JSON line."""
    stream.write(json.dumps(message).encode() + b"\n")


def read_message(stream: BinaryIO) -> dict | None:
    """The next JSON line, or None at the end of the stream."""
    line = stream.readline()
    return json.loads(line) if line.strip() else None


def send_volume(stream: BinaryIO, volume: Volume) -> None:
    """A volume: its geometry and dtype as a JSON line, then its voxels (C order)."""
    array = np.ascontiguousarray(volume.array)
    write_message(stream, {"dtype": array.dtype.str, "shape": list(array.shape), "spacing": list(volume.spacing),
                           "origin": list(volume.origin), "direction": volume.direction.tolist()})
    stream.write(array.tobytes())


def receive_volume(stream: BinaryIO) -> Volume:
    """A volume written by :func:`send_volume` (a plain numeric dtype: nothing is unpickled)."""
    header = read_message(stream)
    if header is None:
        raise EOFError("a volume was expected")
    dtype = np.dtype(header["dtype"])
    if dtype.hasobject:
        raise ValueError("object arrays are not accepted")
    count = int(np.prod(header["shape"])) * dtype.itemsize
    array = np.frombuffer(stream.read(count), dtype=dtype).reshape(header["shape"]).copy()
    return Volume(array, tuple(header["spacing"]), tuple(header["origin"]), np.asarray(header["direction"]))


class WorkerJob:
    """``python -m module`` started once per payload (its stdin), all at once; :meth:`result` waits
    for their JSON-line replies, :meth:`cancel` stops them."""

    def __init__(self, module: str, payloads: list[bytes]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LIBRARY_ROOT), os.environ.get("PYTHONPATH", "")])}
        self.module = module
        self.processes = [subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
                          for _ in payloads]
        self.threads = ThreadPoolExecutor(len(payloads))  # each thread only feeds and drains one process's pipes
        self.outputs = [self.threads.submit(process.communicate, payload)
                        for process, payload in zip(self.processes, payloads, strict=True)]

    def result(self) -> list[list[dict]]:
        """Each process's replies, in payload order; DoseSegError when one failed."""
        try:
            replies = []
            for process, output in zip(self.processes, self.outputs, strict=True):
                stdout, stderr = output.result()
                if process.returncode != 0:
                    detail = stderr.decode(errors="replace").strip().splitlines()
                    last = detail[-1] if detail else "no message"
                    raise DoseSegError(f"a {self.module} worker process failed: {last}")
                stream = io.BytesIO(stdout)
                replies.append(list(iter(partial(read_message, stream), None)))
            return replies
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop every process still running (nothing is left behind)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        self.threads.shutdown(wait=True)


def balanced_groups(costs: list[int], groups: int) -> list[list[int]]:
    """Indices of ``costs`` in ``groups`` groups of similar total, each listed largest first
    (greedy: the next largest goes to the lightest group)."""
    totals = [0] * groups
    members: list[list[int]] = [[] for _ in range(groups)]
    for index in sorted(range(len(costs)), key=lambda i: -costs[i]):
        lightest = totals.index(min(totals))
        members[lightest].append(index)
        totals[lightest] += costs[index]
    return [m for m in members if m]
