"""A small deterministic head-and-neck-like phantom: CT, OARs, targets, dose and body mask.

Used by the tests that must always run and by ``doseseg demo``. Anatomy is laid
out in LPS millimetres around the grid centre: x to the patient's left, y to
posterior, z to superior, so that e.g. LeftParotid lies at larger x, the spinal
cord posterior to the vertebral body and the brainstem above the cord.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume, crop_to_content
from DoseSegLib.io.patient import write_patient

__all__ = ["FALLOFF_MM", "make_phantom", "write_phantom_patient"]

AIR_HU, TISSUE_HU, BONE_HU = -1000, 40, 700
FALLOFF_MM = 12.0


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    """An empty CT grid centred on 0 with identity directions."""
    origin = tuple(-s * (n - 1) / 2 for s, n in zip(spacing, shape, strict=True))
    return Volume(np.zeros(shape, dtype=np.int16), spacing, origin)


def _ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: tuple, semi_axes: tuple) -> np.ndarray:
    return sum(((c - c0) / a) ** 2 for c, c0, a in zip((x, y, z), centre, semi_axes, strict=True)) <= 1.0


def _disc(x: np.ndarray, y: np.ndarray, centre: tuple, radius: float) -> np.ndarray:
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2


def _anatomy(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, jitter: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Body, bone and structure masks (not yet clipped to the body) from LPS coordinates in mm.

    ``jitter`` shifts the organs and targets (mm along x, y, z).
    """
    dx, dy, dz = jitter
    widening = 1.0 + 0.002 * z  # the head is a little wider than the neck
    body = (x / (70.0 * widening)) ** 2 + (y / (85.0 * widening)) ** 2 <= 1.0
    spine = z < 30.0 + dz
    cord = _disc(x, y, (dx, 40.0 + dy), 6.0) & spine
    vertebra = (_disc(x, y, (dx, 15.0 + dy), 12.0) | _disc(x, y, (dx, 40.0 + dy), 11.0)) & spine & ~cord
    jaw_ring = ((x - dx) / 47.0) ** 2 + ((y + 10.0 - dy) / 57.0) ** 2
    mandible = (jaw_ring >= 0.8) & (jaw_ring <= 1.0) & (y < -15.0 + dy) & (z > 5.0 + dz) & (z < 30.0 + dz)
    structures = {
        "Brainstem": _ellipsoid(x, y, z, (dx, 32.0 + dy, 42.0 + dz), (12.0, 13.0, 14.0)),
        "SpinalCord": cord,
        "RightParotid": _ellipsoid(x, y, z, (-50.0 + dx, 10.0 + dy, 15.0 + dz), (12.0, 15.0, 15.0)),
        "LeftParotid": _ellipsoid(x, y, z, (50.0 + dx, 10.0 + dy, 15.0 + dz), (12.0, 15.0, 15.0)),
        "Esophagus": _disc(x, y, (dx, -5.0 + dy), 6.0) & (z < 0.0 + dz),
        "Larynx": _ellipsoid(x, y, z, (dx, -32.0 + dy, -12.0 + dz), (15.0, 12.0, 14.0)),
        "Mandible": mandible,
        "PTV70": _ellipsoid(x, y, z, (-22.0 + dx, -20.0 + dy, 5.0 + dz), (20.0, 18.0, 18.0)),
    }
    structures["PTV56"] = _ellipsoid(x, y, z, (dx, -10.0 + dy, -5.0 + dz), (55.0, 40.0, 28.0)) & ~structures["PTV70"]
    return body, vertebra | mandible, structures


def _dose(targets: dict[float, np.ndarray], body: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Each target's prescription inside it, falling off exponentially with distance; zero outside the body."""
    from scipy import ndimage

    dose = np.zeros(body.shape, dtype=np.float64)
    for level, mask in targets.items():
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        dose = np.maximum(dose, level * np.exp(-distance / FALLOFF_MM))
    return np.where(body, dose, 0.0).astype(np.float32)


def make_phantom(
    shape: tuple[int, int, int] = (64, 64, 48),
    spacing: tuple[float, float, float] = (3.9, 3.9, 2.5),
    seed: int = 0,
) -> Case:
    """A synthetic head-and-neck case with everything on the CT grid.

    Args:
        shape: CT grid size (i, j, k) along x=L, y=P, z=S.
        spacing: voxel size in mm; the field of view should cover about 170 x 200 x 110 mm.
        seed: the same seed always gives the same case; others shift the organs by up
            to 2 mm and change the CT noise.

    Returns:
        A Case with an int16 CT (HU), boolean structures (7 OARs, PTV70, PTV56), a
        float32 dose in Gy and the body as possible-dose mask, prescription 70 Gy.
    """
    rng = np.random.default_rng(seed)
    grid = _grid(shape, spacing)
    axes = [o + s * np.arange(n) for o, s, n in zip(grid.origin, grid.spacing, shape, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    body, bone, masks = _anatomy(x, y, z, rng.uniform(-2.0, 2.0, size=3))
    ct = np.full(shape, AIR_HU, dtype=np.float64)
    ct[body] = TISSUE_HU + rng.normal(0.0, 10.0, size=int(body.sum()))
    ct[bone & body] = BONE_HU
    ct[_disc(x, y, (0.0, -32.0), 5.0) & body] = AIR_HU  # airway: a hole the body mask must fill
    masks = {name: mask & body for name, mask in masks.items()}
    dose = _dose({70.0: masks["PTV70"], 56.0: masks["PTV56"]}, body, grid.spacing)
    return Case(
        name=f"phantom_{seed}",
        ct=grid.with_array(ct.astype(np.int16)),
        structures={name: grid.with_array(mask) for name, mask in masks.items()},
        dose=grid.with_array(dose),
        possible_dose_mask=grid.with_array(body),
        prescription=70.0,
    )


def write_phantom_patient(folder: str | Path, **kwargs) -> Case:
    """Write a phantom in the patient-folder layout, dose and structures cropped to their boxes.

    The CT and possible-dose mask are written on the full grid; the dose is cropped
    to the possible-dose-mask box and each structure to its own box, as in the
    OpenKBP NRRD copy, so reading the folder back needs alignment.

    Args:
        folder: created if missing.
        kwargs: passed to :func:`make_phantom`.

    Returns:
        The uncropped case (the expected result of aligning the folder).
    """
    case = make_phantom(**kwargs)
    cropped = Case(
        name=case.name,
        ct=case.ct,
        structures={name: crop_to_content(mask, mask.array) for name, mask in case.structures.items()},
        dose=crop_to_content(case.require_dose(), case.require_possible_dose_mask().array),
        possible_dose_mask=case.possible_dose_mask,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_patient(folder, cropped)
    return case
