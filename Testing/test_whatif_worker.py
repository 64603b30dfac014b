"""The what-if worker's JSON-lines protocol: round trip, bad requests, death with its parent."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.io.patient import read_dose

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
WORKER = [sys.executable, "-m", "DoseSegLib.run.whatif_worker"]


def _ask(worker: subprocess.Popen, request: dict | str) -> dict:
    worker.stdin.write((request if isinstance(request, str) else json.dumps(request)) + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


@pytest.fixture
def worker(torch_in_workers):
    process = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env=ENV, cwd=REPO)
    yield process
    process.kill()
    process.wait()


def test_round_trip_and_bad_requests(worker, phantom_dir: Path, tmp_path: Path) -> None:
    assert _ask(worker, {"id": 0, "op": "predict"}) == {
        "id": 0, "ok": False, "error": "DoseSegError: no patient open: send an 'open' request first"}
    opened = _ask(worker, {"id": 1, "op": "open", "patient": str(phantom_dir), "device": "cpu"})
    assert opened["ok"] and "PTV70" in opened["result"]["structures"]
    shape = opened["result"]["shape"]
    assert _ask(worker, "not json")["ok"] is False
    assert _ask(worker, {"id": 2, "op": "explode"})["error"].startswith("DoseSegError: unknown op 'explode'")
    assert _ask(worker, {"id": 3, "op": "set_mask", "name": "PTV70"})["ok"] is False
    assert _ask(worker, {"id": 4, "op": "set_mask", "name": "PTV70", "mask_b64": "AAAA", "shape": shape})["ok"] is False
    mask = np.zeros(shape, bool)
    mask[25:35, 25:35, 18:28] = True
    b64 = base64.b64encode(np.packbits(mask)).decode()
    reply = _ask(worker, {"id": 5, "op": "set_mask", "name": "ptv_70", "mask_b64": b64, "shape": shape})
    assert reply == {"id": 5, "ok": True, "result": {"structure": "PTV70"}}
    reply = _ask(worker, {"id": 6, "op": "predict", "dose_file": "dose.nrrd", "dvh": True})
    assert reply["ok"] and reply["id"] == 6
    dose_file = Path(reply["result"]["dose_file"])
    rows = {row["structure"]: row for row in reply["result"]["metrics"]}
    voxel_cc = float(np.prod(read_dose(dose_file).spacing)) / 1000
    assert rows["PTV70"]["Volume[cc]"] == pytest.approx(mask.sum() * voxel_cc, rel=1e-6)
    assert rows["PTV70"]["Mean[Gy]"] == pytest.approx(read_dose(dose_file).array[mask].mean(), abs=0.01)
    assert set(reply["result"]["dvhs"]) == set(rows)
    normalisation = reply["result"]["normalisation"]  # as predict-dose by default: normalised, else said why
    assert (normalisation is None) is bool(reply["result"]["notes"])
    if normalisation is not None:
        assert normalisation["structure"] == "PTV70" and rows["PTV70"]["Mean[Gy]"] == pytest.approx(
            normalisation["after_gy"], abs=0.05)
    assert _ask(worker, {"id": 7, "op": "shutdown"}) == {"id": 7, "ok": True, "result": {}}
    assert worker.wait(timeout=30) == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def test_worker_exits_when_its_parent_dies() -> None:
    parent_code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen({WORKER!r}, stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, env=ENV)
    worker_pid = int(parent.stdout.readline())
    assert _alive(worker_pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker_pid)
