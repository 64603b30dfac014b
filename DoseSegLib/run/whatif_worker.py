"""A persistent what-if worker: one ``WhatIfSession`` behind a JSON-lines protocol on stdin/stdout.

Start it with the library's Python: ``python -m DoseSegLib.run.whatif_worker``. Each request is
one JSON object on one line; each gets exactly one reply line, in order::

    {"id": 1, "op": "open", "patient": "/path/pt_201", "device": "auto", "names": null, "normalise": true}
    {"id": 2, "op": "set_mask", "name": "PTV70", "mask_file": "/tmp/ptv.nrrd"}
    {"id": 3, "op": "set_mask", "name": "PTV70", "mask_b64": "...", "shape": [128, 128, 128]}
    {"id": 4, "op": "predict", "dose_file": "/tmp/dose.nrrd", "dvh": true}
    {"id": 5, "op": "sensitivity", "structure": "LeftParotid", "metric": "mean", "wrt": "PTV70",
     "out_file": "/tmp/sens.nrrd"}
    {"id": 6, "op": "shutdown"}

Replies: ``{"id": ..., "ok": true, "result": {...}}`` or ``{"id": ..., "ok": false, "error": "one line"}``;
a bad request gets an error reply and the worker carries on. ``mask_file`` is an NRRD mask (any
grid, aligned onto the CT like a structure file) or a ``.npy`` boolean array on the CT grid;
``mask_b64`` is ``numpy.packbits`` of the boolean [i, j, k] array in C order, base64-encoded.
``open`` normalises each prediction to the prescription unless ``"normalise": false`` (as ``predict-dose``
and ``--no-normalise``) and replies with the session's ``notes`` (why the dose is not normalised).
``predict`` replies with the metrics rows, the clinical-goal rows, the seconds taken, ``normalisation``
(structure, metric, prescription_gy, factor, before_gy, after_gy; null when not normalised), ``notes`` and, with
``"dvh": true``, each structure's DVH; it writes the dose NRRD when ``dose_file`` is given.
``sensitivity`` writes the map (Gy per voxel) to ``out_file`` and replies with its range.
``dose_file`` and ``out_file`` are plain file names (``dose.nrrd``): the worker writes only into a
private folder of its own, made when it starts and removed when it exits, and replies with the
written file's full path (``dose_file``/``out_file`` in the result); a path is refused.
The worker exits on ``shutdown`` and when its stdin closes (its parent died). Library output
goes to stderr; stdout carries only replies.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device

if TYPE_CHECKING:
    from DoseSegLib.run.whatif import WhatIfSession

Request = dict[str, Any]
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.nrrd$")


def decode_mask(request: Request) -> Any:
    """The mask of a set_mask request: a Volume (NRRD file) or a boolean array."""
    if "mask_file" in request:
        path = Path(request["mask_file"])
        if path.suffix == ".npy":
            from DoseSegLib.io.limits import check_size

            mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: size checked first
            check_size(mapped.size, path, f"the mask ({' x '.join(map(str, mapped.shape))})")
            return np.asarray(mapped, dtype=bool)
        from DoseSegLib.io.patient import read_mask

        return read_mask(path)
    if "mask_b64" not in request or "shape" not in request:
        raise DoseSegError("set_mask needs 'mask_file', or 'mask_b64' with 'shape'")
    shape = tuple(int(n) for n in request["shape"])
    bits = np.frombuffer(base64.b64decode(request["mask_b64"]), np.uint8)
    count = int(np.prod(shape))
    if bits.size != -(-count // 8):
        raise DoseSegError(f"mask_b64 holds {bits.size} bytes, shape {list(shape)} needs {-(-count // 8)}")
    return np.unpackbits(bits, count=count).astype(bool).reshape(shape)


class Worker:
    """Dispatches requests onto one session."""

    def __init__(self) -> None:
        self.session: WhatIfSession | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="doseseg-whatif-worker-"))  # private (0700): only it writes here

    def close(self) -> None:
        """Remove the worker's folder and what it wrote there."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def output(self, request: Request, key: str) -> Path | None:
        """Where to write the file a request names under ``key``: a plain name inside the worker's folder."""
        name = request.get(key)
        if not name:
            return None
        if not isinstance(name, str) or not _FILE_NAME.match(name) or ".." in name:
            raise DoseSegError(f"{key} {name!r}: give a plain file name ending in .nrrd (e.g. dose.nrrd); the worker "
                               f"writes only into its own folder {self.folder}")
        return self.folder / name

    def open(self, request: Request) -> dict:
        from DoseSegLib.core.names import NameMapper
        from DoseSegLib.run.whatif import WhatIfSession

        names = NameMapper.from_json(request["names"]) if request.get("names") else None
        session = self.session = WhatIfSession(request["patient"], request.get("device", Device.AUTO), names=names,
                                               normalise=bool(request.get("normalise", True)))
        case = session.case
        return {"structures": sorted(case.structures), "shape": list(case.ct.shape),
                "device": str(session.model.device), "notes": session.notes}

    def _session(self):
        if self.session is None:
            raise DoseSegError("no patient open: send an 'open' request first")
        return self.session

    def set_mask(self, request: Request) -> dict:
        return {"structure": self._session().set_mask(request["name"], decode_mask(request))}

    def predict(self, request: Request) -> dict:
        path = self.output(request, "dose_file")
        session = self._session()
        result = session.predict()
        normalisation = result.normalisation.to_dict() if result.normalisation is not None else None
        reply = {"metrics": result.metrics, "goals": result.goals, "seconds": result.seconds,
                 "normalisation": normalisation, "notes": session.notes}
        if path is not None:
            from DoseSegLib.io.patient import write_dose

            write_dose(path, result.dose)
            reply["dose_file"] = str(path)
        if request.get("dvh"):
            reply["dvhs"] = {n: {"dose_gy": d.dose_gy.tolist(), "volume_cc": d.volume_cc.tolist(),
                                 "volume_pct": d.volume_pct.tolist()} for n, d in result.dvhs.items()}
        return reply

    def sensitivity(self, request: Request) -> dict:
        from DoseSegLib.io.patient import write_volume

        session = self._session()
        path = self.output(request, "out_file")
        grad = session.sensitivity(request["structure"], request.get("metric", "mean"), request.get("wrt"))
        reply = {"min": float(grad.min()), "max": float(grad.max()), "voxel_cc": session.case.ct.voxel_volume_cc}
        if path is not None:
            write_volume(path, session.case.ct.with_array(grad), {"SensitivityUnits": "Gy per voxel"})
            reply["out_file"] = str(path)
        return reply

    def handle(self, line: str) -> tuple[dict, bool]:
        """The reply to one request line, and whether to stop."""
        request_id = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise DoseSegError("a request is a JSON object")
            request_id, op = request.get("id"), request.get("op")
            if op == "shutdown":
                return {"id": request_id, "ok": True, "result": {}}, True
            if op not in ("open", "set_mask", "predict", "sensitivity"):
                raise DoseSegError(f"unknown op '{op}' (open, set_mask, predict, sensitivity, shutdown)")
            return {"id": request_id, "ok": True, "result": getattr(self, op)(request)}, False
        except KeyError as exc:
            return {"id": request_id, "ok": False, "error": f"missing field {exc}"}, False
        except Exception as exc:  # every failure is a reply; the worker stays alive
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return {"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {message}"}, False


def serve(requests: TextIO, replies: TextIO) -> None:
    """Answer requests line by line until shutdown or end of input."""
    worker = Worker()
    try:
        for line in requests:
            if not line.strip():
                continue
            reply, stop = worker.handle(line)
            replies.write(json.dumps(reply, default=float) + "\n")
            replies.flush()
            if stop:
                break
    finally:
        worker.close()


def main() -> None:
    """Serve on stdin/stdout; everything else printed goes to stderr."""
    replies = sys.stdout
    sys.stdout = sys.stderr
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
