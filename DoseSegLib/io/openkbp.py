"""Import a patient in the OpenKBP challenge's sparse CSV format.

Each ``<name>.csv`` lists flat indices (C order) into a 128^3 array with axes
(anterior->posterior, right->left, superior->inferior) and optional values. The
conversion to LPS NRRD follows the convention of the shared NRRD copy:
``b[x, y, z] = a[y, x, 127 - z]``, spacing ``(vd[1], vd[0], vd[2])``, a grid centred
on 0, CT as HU = value - 1000 (air where absent), dose and structures cropped to
their boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.volume import Volume, crop_to_content
from DoseSegLib.io.patient import with_mapper_results

GRID = 128
_SPECIAL = {"ct", "dose", "possible_dose_mask", "voxel_dimensions"}


def _read_sparse(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat indices and values (None for a mask) of one CSV file."""
    try:
        rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line.strip()]
        indices = np.array([int(float(r[0])) for r in rows], dtype=np.int64)
        texts = [r[1].strip() if len(r) > 1 else "" for r in rows]
        values = np.array([float(v) for v in texts], dtype=np.float64) if any(texts) else None
    except (OSError, ValueError, IndexError) as exc:
        raise DoseSegError(f"{path}: not an OpenKBP sparse CSV ({exc})") from exc
    if indices.size and (indices.min() < 0 or indices.max() >= GRID**3):
        raise DoseSegError(f"{path}: index outside the {GRID}^3 grid")
    if values is not None and not np.all(np.isfinite(values)):
        raise DoseSegError(f"{path}: contains NaN or infinite values")
    return indices, values


def _to_lps(array: np.ndarray) -> np.ndarray:
    """OpenKBP (A->P, R->L, S->I) array to LPS-indexed ``[x, y, z]``."""
    return np.ascontiguousarray(array.transpose(1, 0, 2)[:, :, ::-1])


def read_openkbp_csv(folder: str | Path, mapper: NameMapper | None = None) -> Case:
    """Read an OpenKBP CSV patient folder into a Case on the NRRD copy's geometry."""
    folder = Path(folder)
    if not (folder / "ct.csv").is_file():
        raise DoseSegError(f"{folder / 'ct.csv'}: file not found (not an OpenKBP patient folder?)")
    try:
        voxel = np.loadtxt(folder / "voxel_dimensions.csv", dtype=float)
    except (OSError, ValueError) as exc:
        raise DoseSegError(f"{folder / 'voxel_dimensions.csv'}: unreadable ({exc})") from exc
    if voxel.shape != (3,) or not np.all(np.isfinite(voxel)) or np.any(voxel <= 0):
        raise DoseSegError(f"{folder / 'voxel_dimensions.csv'}: expected three positive voxel sizes in mm, "
                           f"found {voxel.tolist()}")
    spacing = (voxel[1], voxel[0], voxel[2])
    origin = tuple(-s * (GRID - 1) / 2 for s in spacing)
    mapper = mapper or NameMapper()

    def dense(name: str, dtype, fill=0) -> np.ndarray:
        indices, values = _read_sparse(folder / f"{name}.csv")
        flat = np.full(GRID**3, fill, dtype=dtype)
        flat[indices] = 1 if values is None else values
        return _to_lps(flat.reshape(GRID, GRID, GRID))

    def volume(array: np.ndarray) -> Volume:
        return Volume(array, spacing, origin)

    ct_values = dense("ct", np.float64)
    ct = volume(np.where(ct_values > 0, ct_values - 1000, -1000).astype(np.int16))
    structures: dict[str, Volume] = {}
    original_names: dict[str, str] = {}
    for file in sorted(folder.glob("*.csv")):
        name = file.stem
        if name not in _SPECIAL:
            _, canonical = mapper.read(file, name, original_names, "remove one of the two files")
            mask = dense(name, np.uint8)
            if not mask.any():
                raise DoseSegError(f"{file}: structure is empty (no voxel listed)")
            structures[canonical] = crop_to_content(volume(mask), mask > 0)
    possible = None
    if (folder / "possible_dose_mask.csv").is_file():
        possible = volume(dense("possible_dose_mask", np.uint8))
    dose = None
    if (folder / "dose.csv").is_file():
        dose = volume(dense("dose", np.float32))
        if dose.array.min() < 0:
            raise DoseSegError(f"{folder / 'dose.csv'}: dose has negative values (min {dose.array.min():.3g}); "
                               "expected Gy >= 0")
        if possible is not None:
            dose = crop_to_content(dose, possible.array > 0)
    case = Case(folder.name, ct, structures, dose, possible, source=folder)
    return with_mapper_results(case, mapper, original_names)
