"""build-cohort on OpenKBP patients exported as DICOM-RT: time per patient, and the training arrays it gives
against those of the NRRD copy.

Usage: python benchmarks/bench_build_cohort.py [--train 3] [--validation 2] [--work DIR]

The first ``--train`` patients of OpenKBP's train split and ``--validation`` of its validation split
are written as DICOM-RT with the project's exporter (CT series, RTSTRUCT with vendor organ names
and the possible-dose mask as EXTERNAL, RTDOSE on the dose's own grid, RTPLAN with the PTV
levels), each patient in a nested folder. ``doseseg build-cohort`` then reads the archive; its
wall time is divided by the patient count. Each cohort patient (matched to its source by the CT
voxels: the cohort is pseudonymous) is preprocessed as ``train-dose`` does (``models.dose.cache``)
and compared with the NRRD copy's arrays: the maximum absolute difference of every input channel
and of the dose, and whether the boxes agree (the channels agree only when the site's organs are
OpenKBP's seven: ``--openkbp-organs``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import machine, peak_memory_gb, require_data

from DoseSegLib.cli.main import main as doseseg
from DoseSegLib.core.case import OARS
from DoseSegLib.io.listing import patient_folders
from DoseSegLib.io.patient import read_patient, read_volume
from DoseSegLib.models.dose.cache import preprocess_patient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
from dicom_helpers import write_dicom_patient  # the tests' DICOM-RT writer

VENDOR = {"Brainstem": "BRSTEM", "SpinalCord": "Cord", "LeftParotid": "Parotid_L", "RightParotid": "Parotid_R",
          "Esophagus": "Esoph", "Mandible": "Mand"}


def export(folders: list[Path], archive: Path) -> float:
    """Write each patient as DICOM-RT under ``archive/<split>/<patient>/{CT,RT}``; returns the seconds it took."""
    start = time.perf_counter()
    for number, folder in enumerate(folders):
        case = read_patient(folder)
        case = replace(case, structures={VENDOR.get(n, n): m for n, m in case.structures.items()})
        scratch = archive.parent / "scratch"
        write_dicom_patient(scratch, case, patient_id=f"BENCH{number:04d}", patient_name=f"Bench^{folder.name}")
        for file in scratch.iterdir():
            target = archive / folder.parent.name / folder.name / ("CT" if file.name.startswith("CT") else "RT")
            target.mkdir(parents=True, exist_ok=True)
            file.rename(target / file.name)
        scratch.rmdir()
    return time.perf_counter() - start


def compare(cohort: Path, folders: list[Path]) -> list[dict]:
    """Each source patient's training arrays against its cohort patient's."""
    built = {p: read_volume(p / "ct.nrrd").array for p in (cohort / "train").glob("P*")}
    built |= {p: read_volume(p / "ct.nrrd").array for p in (cohort / "validation").glob("P*")}
    oars = tuple(json.loads((cohort / "site.json").read_text())["oars"])
    rows = []
    for folder in folders:
        ct = read_volume(folder / "ct.nrrd").array
        match = [p for p, array in built.items() if array.shape == ct.shape and np.array_equal(array, ct)]
        if len(match) != 1:
            rows.append({"patient": folder.name, "found": len(match)})
            continue
        mine, reference = preprocess_patient(match[0], oars), preprocess_patient(folder)
        row = {"patient": folder.name, "found": 1, "same_box": np.array_equal(mine["box"], reference["box"]),
               "same_channels": oars == OARS}
        if row["same_box"] and row["same_channels"]:
            inputs = np.abs(mine["inputs"].astype(np.float32) - reference["inputs"].astype(np.float32))
            per_channel = inputs.reshape(len(inputs), -1).max(axis=1)
            row.update(max_input_diff=float(per_channel.max()), channels_differing=int((per_channel > 0).sum()),
                       max_dose_diff_gy=float(np.abs(mine["dose"] - reference["dose"]).max()))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=3)
    parser.add_argument("--validation", type=int, default=2)
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--openkbp-organs", action="store_true",
                        help="give the site OpenKBP's seven organs (--structures), to compare every channel; by "
                             "default the site's organs are those in half of the patients")
    args = parser.parse_args()
    data = require_data()
    folders = patient_folders(data / "train", args.train) + patient_folders(data / "validation", args.validation)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        archive, cohort = work / "archive", work / "cohort"
        exported = export(folders, archive)
        start = time.perf_counter()
        status = doseseg(["build-cohort", str(archive), "-o", str(cohort), "--validation", "1",
                          *(["--structures", *OARS] if args.openkbp_organs else [])])
        seconds = time.perf_counter() - start
        rows = compare(cohort, folders)
    print(f"machine: {machine()}")
    print(f"patients {len(folders)}; export as DICOM-RT {exported / len(folders):.2f} s per patient")
    print(f"build-cohort exit {status}: {seconds:.1f} s, {seconds / len(folders):.2f} s per patient, "
          f"peak {peak_memory_gb():.2f} GB (this process, export included)")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
