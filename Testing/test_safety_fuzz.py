"""Issue #28: a seeded, bounded fuzzing loop over the NRRD and DICOM readers (see fuzz_inputs.py).

Each mutated patient must give success or a one-line DoseSegError, never another exception, never more
memory than an address-space limit (set with resource.setrlimit on the subprocess), leave its inputs
unchanged and write nothing outside ``-o``. The default suite runs a short loop; the slow suite >= 500 cases.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ADDRESS_SPACE = 3 << 30  # bytes: the readers' peak under the 0.25 GB volume limit stays far below this


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _fuzz(seed: int, count: int, workdir: Path, timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "DOSESEG_MAX_VOLUME_GB": "0.25",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_inputs.py"), str(seed), str(count), str(workdir)],
                          env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=_limited)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(summary: dict, count: int) -> None:
    assert summary["cases"] == count
    assert summary["failures"] == [], json.dumps(summary["failures"], indent=1)[:4000]
    assert summary["error"] > count // 4  # the mutations do reach the readers' checks
    assert summary["ok"] > 0  # and harmless ones still read


def test_fuzz_short(tmp_path: Path) -> None:
    _check(_fuzz(seed=28, count=20, workdir=tmp_path, timeout=300), 20)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_long(tmp_path: Path, seed: int) -> None:
    _check(_fuzz(seed=seed, count=300, workdir=tmp_path, timeout=3600), 300)
