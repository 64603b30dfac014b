"""A synthetic patient in OpenKBP's sparse-CSV format (the challenge's axis convention)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

N = 128
VOXEL_DIMENSIONS = (3.0, 2.0, 2.5)  # mm along OpenKBP axes 0 (A->P), 1 (R->L), 2 (S->I)


def write_csv(path: Path, indices: list[int], values: list[float] | None = None) -> None:
    """One file in the challenge's format: header ``,data`` then ``index,value`` rows."""
    rows = [f"{i},{'' if values is None else values[n]}" for n, i in enumerate(indices)]
    path.write_text("\n".join([",data", *rows]) + "\n")


def flat(i0: int, i1: int, i2: int) -> int:
    return int(np.ravel_multi_index((i0, i1, i2), (N, N, N)))


def lps_index(i0: int, i1: int, i2: int) -> tuple[int, int, int]:
    """Where an OpenKBP voxel lands in the NRRD copy: x from axis 1, y from axis 0, z from axis 2 reversed."""
    return i1, i0, N - 1 - i2


CT_VOXELS = {(10, 20, 30): 1040.0, (11, 20, 30): 1.0, (64, 64, 64): 1700.0, (0, 0, 0): 0.0}
PAROTID = [(40, 90, 50), (42, 91, 52), (41, 93, 50)]
POSSIBLE = [(30, 60, 40), (35, 70, 60), (50, 65, 45)]
DOSE = {(30, 60, 40): 70.5, (35, 70, 60): 12.25}


def write_csv_patient(folder: Path) -> Path:
    """``folder`` (created) with voxel_dimensions.csv, ct, Parotid_L, possible_dose_mask and dose CSVs."""
    folder.mkdir()
    np.savetxt(folder / "voxel_dimensions.csv", VOXEL_DIMENSIONS)
    write_csv(folder / "ct.csv", [flat(*v) for v in CT_VOXELS], list(CT_VOXELS.values()))
    write_csv(folder / "Parotid_L.csv", [flat(*v) for v in PAROTID])
    write_csv(folder / "possible_dose_mask.csv", [flat(*v) for v in POSSIBLE])
    write_csv(folder / "dose.csv", [flat(*v) for v in DOSE], list(DOSE.values()))
    return folder
