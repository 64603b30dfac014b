"""Issue #28, item 2: the what-if worker writes only inside a folder of its own (it overwrote a patient's
reference dose and CT through ``dose_file``/``out_file``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = [sys.executable, "-m", "DoseSegLib.run.whatif_worker"]
TreeHash = Callable[[Path], dict[str, str]]


def _ask(worker: subprocess.Popen, request: dict) -> dict:
    worker.stdin.write(json.dumps(request) + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def test_the_worker_writes_only_into_its_own_folder(phantom_dir: Path, tmp_path: Path, tree_hash: TreeHash,
                                                    tiny_models: Path) -> None:
    victim = tmp_path / "unrelated.txt"
    victim.write_text("keep")
    before = tree_hash(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path / "tmp")}  # DOSESEG_MODELS: tiny
    (tmp_path / "tmp").mkdir()
    worker = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env, cwd=tmp_path)
    try:
        assert _ask(worker, {"id": 1, "op": "open", "patient": str(phantom_dir), "device": "cpu"})["ok"]
        hostile = [str(phantom_dir / "dose.nrrd"), str(phantom_dir / "ct.nrrd"), str(victim), "../dose.nrrd",
                   "sub/dose.nrrd", "..nrrd", "/dev/null", ".hidden.nrrd", 7]
        for i, name in enumerate(hostile):  # refused before anything is computed
            for op, key, extra in (("predict", "dose_file", {}), ("sensitivity", "out_file", {"structure": "PTV70"})):
                reply = _ask(worker, {"id": 10 + i, "op": op, key: name, **extra})
                assert not reply["ok"] and "plain file name" in reply["error"], (name, reply)
        reply = _ask(worker, {"id": 50, "op": "predict", "dose_file": "dose.nrrd"})
        written = Path(reply["result"]["dose_file"])
        assert written.parent.parent == tmp_path / "tmp" and written.parent.name.startswith("doseseg-whatif-worker-")
        assert (written.parent.stat().st_mode & 0o077) == 0  # private to the user
        assert _ask(worker, {"id": 51, "op": "shutdown"})["ok"]
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
    assert not written.parent.exists()  # removed when the worker exits
    assert tree_hash(tmp_path) == {**before, "tmp": "dir"}  # the patient (in tmp_path) and the victim unchanged


@pytest.mark.parametrize("name", ["dose.nrrd", "sensitivity.nrrd", "edit_2.nrrd"])
def test_plain_names_are_accepted(name: str) -> None:
    from DoseSegLib.run.whatif_worker import Worker

    worker = Worker()
    try:
        assert worker.output({"dose_file": name}, "dose_file") == worker.folder / name
    finally:
        worker.close()
    assert not worker.folder.exists()


def test_a_mask_file_is_size_checked_before_it_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.limits import LIMIT_VARIABLE
    from DoseSegLib.run.whatif_worker import decode_mask

    path = tmp_path / "edit.npy"
    np.save(path, np.ones((100, 100, 100), bool))
    monkeypatch.setenv(LIMIT_VARIABLE, "0.0001")  # 100 kB: below this 1 MB mask
    with pytest.raises(DoseSegError, match=r"above the 0\.0001 GB limit"):
        decode_mask({"mask_file": str(path)})
    monkeypatch.delenv(LIMIT_VARIABLE)
    assert decode_mask({"mask_file": str(path)}).all()
