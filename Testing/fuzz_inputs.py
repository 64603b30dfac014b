"""A seeded, bounded fuzzing loop over DoseSeg's readers (issue #28): mutated NRRD headers and data, mutated
DICOM files (CT slices, RTSTRUCT, RTDOSE, RTPLAN), read as a patient (and every tenth one through
``doseseg align``). Each case must give success or a one-line DoseSegError, leave its inputs unchanged and
write nothing outside its ``-o``; anything else (another exception, a MemoryError under the address-space
limit the caller sets, a hang past the alarm) is reported.

Run by ``test_safety_fuzz.py`` in a subprocess: ``python fuzz_inputs.py SEED COUNT WORKDIR`` prints a JSON
summary on its last line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import shutil
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
NRRD_FIELDS = ["type", "dimension", "sizes", "endian", "encoding", "space", "space directions", "space origin",
               "spacings", "line skip", "byte skip", "data file", "kinds", "DoseUnits:"]
NRRD_VALUES = ["", "-1", "0", "99999999999", "1e308", "nan", "inf", "abc", "4096 4096 512", "1 1", "1 1 1 1",
               "(nan,0,0) (0,1,0) (0,0,1)", "(0,0,0) (0,0,0) (0,0,0)", "(1,0,0) (1,0,0) (0,0,1)", "/etc/passwd",
               "../ct.nrrd", "/dev/zero", "/dev/urandom", "gzip", "raw", "bzip2", "ascii", "big", "double",
               "uint64", "block", "right-anterior-superior", "x" * 5000, "\x00", "LIST", "ct.nrrd", "-5 2 2",
               "CGY", "furlongs", "(1e300,1e300,1e300)"]
DICOM_VALUES = {
    "ImagePositionPatient": [["nan", "0", "0"], ["1e300", "0", "0"], ["0", "0"], ["abc", "0", "0"]],
    "ImageOrientationPatient": [["1", "0", "0", "0", "0.8", "0"], ["0"] * 6, ["nan"] * 6, ["1", "0", "0"]],
    "PixelSpacing": [["0", "1"], ["-1", "1"], ["nan", "1"], ["1e-30", "1e-30"]],
    "Rows": [0, 65535, 1], "Columns": [0, 65535, 1], "NumberOfFrames": ["0", "100000", "-1"],
    "BitsAllocated": [0, 1, 64], "RescaleSlope": ["abc", "nan", "0", "1e300"], "RescaleIntercept": ["abc", "inf"],
    "SliceThickness": ["0", "-2", "nan"], "DoseGridScaling": ["abc", "-1", "1e300", "0"],
    "GridFrameOffsetVector": [["0", "0", "0"], ["nan"], ["0", "-1e300"]], "DoseUnits": ["CGY", "RELATIVE", ""],
    "FrameOfReferenceUID": ["1.2.3", ""], "PatientID": ["OTHER", ""], "SeriesInstanceUID": ["1.2.3.4"],
    "Modality": ["MR", "RTDOSE", ""],
}


def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*")) if not p.is_symlink()}


def mutate_nrrd(path: Path, rng: random.Random) -> str:
    """One mutation of a NRRD file's header or data; returns what was done."""
    data = path.read_bytes()
    end = data.find(b"\n\n")
    header, body = data[:end].decode("latin-1").split("\n"), data[end:]
    choice = rng.randrange(6)
    if choice <= 2:  # set a field to a hostile value (two thirds of the cases)
        field, value = rng.choice(NRRD_FIELDS), rng.choice(NRRD_VALUES)
        line = f"{field}={value}" if field.endswith(":") else f"{field}: {value}"
        header = [h for h in header if not h.startswith(field.rstrip(":"))] + [line]
        what = f"header {line[:60]!r}"
    elif choice == 3:
        del header[rng.randrange(1, len(header))]
        what = "header line removed"
    elif choice == 4:
        cut = rng.randrange(len(body))
        body = body[:cut]
        what = f"data cut at {cut}"
    else:
        body = bytearray(body)
        for _ in range(rng.randint(1, 20)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        body = bytes(body)
        what = "data bytes flipped"
    path.write_bytes("\n".join(header).encode("latin-1") + body)
    return what


def mutate_dicom(path: Path, rng: random.Random) -> str:
    """One mutation of a DICOM file: a hostile attribute value, deflation, truncation or flipped bytes."""
    import pydicom
    from pydicom import config

    choice = rng.randrange(5)
    if choice <= 1:
        keyword, values = rng.choice(sorted(DICOM_VALUES.items()))
        value = rng.choice(values)
        ds = pydicom.dcmread(path, force=True)
        config.settings.writing_validation_mode = config.IGNORE
        try:
            setattr(ds, keyword, value)
            ds.save_as(path, enforce_file_format=False)
        except Exception:  # a value pydicom cannot write: flip bytes instead
            return mutate_bytes(path, rng)
        return f"{keyword}={str(value)[:40]}"
    if choice == 2 and rng.random() < 0.3:
        ds = pydicom.dcmread(path, force=True)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=False)
        return "deflated"
    if choice == 3:
        data = path.read_bytes()
        cut = rng.randrange(len(data))
        path.write_bytes(data[:cut])
        return f"cut at {cut}"
    return mutate_bytes(path, rng)


def mutate_bytes(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    for _ in range(rng.randint(1, 30)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    path.write_bytes(bytes(data))
    return "bytes flipped"


class Hang(Exception):
    """Raised by the alarm when one case runs too long."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang("no result within the time limit")


def one_case(folder: Path, out_parent: Path, through_cli: bool) -> str:
    """Read ``folder`` as a patient (or run ``align`` on it); returns "ok" or the DoseSegError's text."""
    from DoseSegLib.cli.main import main
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.patient import read_patient

    if through_cli:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["align", str(folder), "-o", str(out_parent / "out")])
        errors = [line for line in err.getvalue().splitlines() if line.startswith("doseseg:")]  # warnings aside
        if code and (len(errors) != 1 or "unexpected" in errors[0]):
            raise AssertionError(f"not one DoseSegError line: {err.getvalue()[-300:]!r}")
        return "ok" if code == 0 else errors[0]
    try:
        align_case(read_patient(folder))
    except DoseSegError as exc:
        if "\n" in str(exc) or not str(exc):
            raise AssertionError(f"not a one-line message: {exc!r}") from exc
        return str(exc)
    return "ok"


def run(seed: int, count: int, workdir: Path) -> dict:
    sys.path.insert(0, str(HERE))
    from dicom_helpers import write_dicom_patient

    from DoseSegLib.io.phantom import make_phantom, write_phantom_patient

    rng = random.Random(seed)
    pristine = {"nrrd": workdir / "pristine_nrrd", "dicom": workdir / "pristine_dicom"}
    write_phantom_patient(pristine["nrrd"], shape=(40, 40, 32), seed=seed)
    write_dicom_patient(pristine["dicom"], make_phantom(shape=(40, 40, 32), seed=seed))
    signal.signal(signal.SIGALRM, _alarm)
    failures, outcomes = [], {"ok": 0, "error": 0}
    for i in range(count):
        kind = "nrrd" if i % 2 == 0 else "dicom"
        case_dir = workdir / f"case_{i}"
        folder = case_dir / "patient"
        shutil.copytree(pristine[kind], folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        target = rng.choice(files)
        mutate: Callable[[Path, random.Random], str] = mutate_nrrd if kind == "nrrd" else mutate_dicom
        what = f"{kind} {target.relative_to(folder)}: {mutate(target, rng)}"
        before = tree_hash(folder)
        through_cli = i % 10 == 9
        signal.alarm(20)
        try:
            result = one_case(folder, case_dir, through_cli)
            outcomes["ok" if result == "ok" else "error"] += 1
        except BaseException as exc:  # every other outcome is a finding
            failures.append({"case": i, "what": what, "error": f"{type(exc).__name__}: {exc}"[:300],
                             "where": traceback.format_exc().strip().splitlines()[-8:]})
        finally:
            signal.alarm(0)
        if tree_hash(folder) != before:
            failures.append({"case": i, "what": what, "error": "the input changed"})
        extra = sorted(p.name for p in case_dir.iterdir() if p.name not in ("patient", "out"))
        if extra:
            failures.append({"case": i, "what": what, "error": f"written outside -o: {extra}"})
        shutil.rmtree(case_dir, ignore_errors=True)
    return {"cases": count, **outcomes, "failures": failures}


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)
    summary = run(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
    print(json.dumps(summary))
