"""Reading and writing NRRD volumes, Slicer .seg.nrrd segmentations and patient folders."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from DoseSegLib.core.case import Case
from DoseSegLib.core.checks import named_path, require_path, require_type
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper, printable_name, shown_name, structure_filenames
from DoseSegLib.core.volume import Volume, crop_box, mask_box
from DoseSegLib.io.nrrd_read import read_header, read_nrrd
from DoseSegLib.io.nrrd_text import ascii_values, one_line, write_with_utf8

__all__ = [
    "CT_FILE",
    "DOSE_FILE",
    "DOSE_SCALE",
    "DOSE_UNITS_KEY",
    "GZIP_LEVEL",
    "POSSIBLE_DOSE_FILE",
    "ct_source",
    "dose_source",
    "read_dose",
    "read_mask",
    "read_named_segmentation",
    "read_patient",
    "read_segmentation",
    "read_volume",
    "require_patient",
    "with_mapper_results",
    "write_dose",
    "write_patient",
    "write_segmentation",
    "write_structures",
    "write_volume"
]

log = logging.getLogger(__name__)

_TO_LPS = {
    "left-posterior-superior": np.diag([1.0, 1.0, 1.0]),
    "right-anterior-superior": np.diag([-1.0, -1.0, 1.0]),
    "left-anterior-superior": np.diag([1.0, -1.0, 1.0]),
}


def _geometry(header: dict, path: Path) -> tuple[tuple, tuple, np.ndarray]:
    """Spacing, origin and direction (LPS) from a pynrrd header."""
    space = header.get("space", "left-posterior-superior")
    if space not in _TO_LPS:
        raise DoseSegError(f"{path}: unsupported NRRD space '{space}' (need LPS, RAS or LAS)")
    to_lps = _TO_LPS[space]
    if "space directions" in header:
        axes = np.asarray(header["space directions"], dtype=float)
        if axes.shape != (3, 3) or not np.all(np.isfinite(axes)):
            raise DoseSegError(f"{path}: 'space directions' must give three 3D vectors")
        spacing = np.linalg.norm(axes, axis=1)
        if np.any(spacing <= 0):
            raise DoseSegError(f"{path}: zero voxel spacing")
        direction = to_lps @ (axes / spacing[:, None]).T
        if abs(np.linalg.det(direction)) < 1e-3:
            raise DoseSegError(f"{path}: 'space directions' {axes.tolist()} are parallel (no 3D grid)")
    else:
        spacing = np.asarray(header.get("spacings", (1.0, 1.0, 1.0)), dtype=float).ravel()
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise DoseSegError(f"{path}: 'spacings' must be three positive numbers (found {spacing.tolist()})")
        direction = to_lps @ np.eye(3)
    origin = to_lps @ np.asarray(header.get("space origin", (0.0, 0.0, 0.0)), dtype=float).ravel()
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise DoseSegError(f"{path}: 'space origin' must be three finite numbers")
    return tuple(spacing), tuple(origin), direction


def read_volume(path: str | Path) -> Volume:
    """Read a 3D NRRD file into a Volume, with a clear error for anything unusable (see ``nrrd_read``)."""
    path = Path(path)
    if not path.exists():
        raise DoseSegError(f"{path}: file not found")
    try:
        array, header = read_nrrd(path)
    except OSError as exc:
        raise DoseSegError(f"{path}: unreadable NRRD ({exc.strerror or exc})") from exc
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise DoseSegError(f"{path}: contains NaN or infinite values")
    spacing, origin, direction = _geometry(header, path)
    return Volume(array, spacing, origin, direction)  # as stored, i fastest (Fortran order): no transposing copy


DOSE_UNITS_KEY = "DoseUnits"  # NRRD key/value pair named after the DICOM RT Dose attribute (3004,0002)
DOSE_SCALE = {"GY": 1.0, "CGY": 0.01}


_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
GZIP_LEVEL = 1  # fast; level 9 takes several times longer on a clinical-size dose for a few % smaller files


def _key_values(fields: dict[str, str]) -> dict[str, str]:
    """``fields`` as NRRD key/value pairs (``key:=value``) every reader opens: a key must not be a standard
    NRRD field (``units: Gy`` is read as per-axis units and broke ITK and Slicer), a value is one line."""
    from nrrd.writer import _NRRD_FIELD_ORDER

    for key in fields:
        if key in _NRRD_FIELD_ORDER or not _KEY.match(key):
            raise ValueError(f"NRRD key/value pair '{key}' is a standard NRRD field or not a plain key")
    return {key: one_line(value) for key, value in fields.items()}


def write_volume(path: str | Path, volume: Volume, fields: dict[str, str] | None = None) -> None:
    """Write a Volume as a gzip-compressed NRRD in LPS space, with optional key/value ``fields``
    (keys of letters, digits and ``_``, not standard NRRD fields; values in UTF-8 as Slicer writes them)."""
    import nrrd

    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    values, utf8 = ascii_values(_key_values(fields or {}))
    header = {
        "space": "left-posterior-superior",
        "space directions": (volume.direction * np.asarray(volume.spacing)).T,
        "space origin": np.asarray(volume.origin),
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
        **values,
    }
    write_with_utf8(path, lambda file: nrrd.write(file, array, header, compression_level=GZIP_LEVEL), utf8)


def write_dose(path: str | Path, dose: Volume) -> None:
    """Write a dose in Gy, its unit in the header (``DoseUnits:=GY``)."""
    write_volume(path, dose, {DOSE_UNITS_KEY: "GY"})


def _dose_scale(path: Path) -> float:
    """Gy per stored unit from the header's ``DoseUnits`` (GY or CGY); Gy when absent."""
    units = str(read_header(path)[0].get(DOSE_UNITS_KEY, "GY")).strip()
    if units.upper() not in DOSE_SCALE:
        raise DoseSegError(f"{path}: dose units '{units}' ({DOSE_UNITS_KEY}) are not GY or CGY; "
                           "convert the dose to Gy and fix the header")
    return DOSE_SCALE[units.upper()]


def read_mask(path: str | Path) -> Volume:
    """Read a label NRRD as a boolean mask, refusing an empty one."""
    volume = read_volume(path)
    mask = volume.array > 0
    if not mask.any():
        raise DoseSegError(f"{path}: structure is empty (no voxel set)")
    return volume.with_array(mask)


def read_dose(path: str | Path, ringing_gy: float = 0.0) -> Volume:
    """Read a dose NRRD (or a DICOM RTDOSE in GY) in Gy as float32, refusing negative values; a NRRD
    ``DoseUnits:=CGY`` header is converted.

    Args:
        ringing_gy: negative values down to ``-ringing_gy`` (interpolation ringing of other
            tools' outputs) are set to 0 with a warning; lower ones are still refused.
    """
    from DoseSegLib.io.dicom.detect import sniff

    if Path(path).is_file() and sniff(Path(path)) == "dicom":
        from DoseSegLib.io.dicom.rtdose import read_dose_gy

        volume = read_dose_gy(path).volume
        dose = volume.array.astype(np.float32)
    else:
        volume = read_volume(path)
        dose = volume.array.astype(np.float32) * np.float32(_dose_scale(Path(path)))
    low = float(dose.min()) if dose.size else 0.0
    if low < -ringing_gy or (low < 0 and not ringing_gy):
        raise DoseSegError(f"{path}: dose has negative values (min {low:.3g} Gy); expected Gy >= 0"
                           + (f" (values down to -{ringing_gy:g} Gy are taken as ringing)" if ringing_gy else ""))
    if low < 0:
        log.warning("%s: %d voxels slightly negative (min %.3g Gy, interpolation ringing?) set to 0 Gy",
                    path, int((dose < 0).sum()), low)
        dose = np.maximum(dose, 0)
    return volume.with_array(dose)


def read_segmentation(path: str | Path, mapper: NameMapper | None = None) -> dict[str, Volume]:
    """Read a Slicer .seg.nrrd into boolean masks keyed by canonical segment name."""
    return read_named_segmentation(path, mapper)[0]


def read_named_segmentation(
    path: str | Path, mapper: NameMapper | None = None
) -> tuple[dict[str, Volume], dict[str, str]]:
    """A Slicer .seg.nrrd's boolean masks keyed by canonical segment name, and each one's segment name as in
    the file."""
    import slicerio

    path = Path(path)
    if not path.exists():
        raise DoseSegError(f"{path}: file not found")
    voxels, header = read_nrrd(path, dimensions=(3, 4))  # within the size limits, before slicerio reads the header
    try:
        seg = slicerio.read_segmentation(str(path), skip_voxels=True)
    except Exception as exc:  # slicerio raises many types for malformed files
        raise DoseSegError(f"{path}: unreadable segmentation ({exc})") from exc
    seg["voxels"] = voxels
    if not seg.get("segments"):
        raise DoseSegError(f"{path}: no segment in this file: not a Slicer segmentation (.seg.nrrd); give a "
                           "segmentation exported from Slicer, or structures/<Name>.nrrd files")
    _utf8_names(seg["segments"], header)
    voxels = seg["voxels"]
    layered = voxels.ndim == 4
    ijk_to_lps = np.asarray(seg["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    direction = ijk_to_lps[:3, :3] / spacing
    mapper = mapper or NameMapper()
    masks: dict[str, Volume] = {}
    given: dict[str, str] = {}  # canonical name -> segment name
    for segment in seg["segments"]:
        layer = voxels[segment.get("layer", 0)] if layered else voxels
        mask = layer == segment["labelValue"]
        shown, name = mapper.read(path, segment["name"], given)
        if not mask.any():
            raise DoseSegError(f"{path}: segment '{shown}' is empty")
        masks[name] = Volume(mask, tuple(spacing), tuple(ijk_to_lps[:3, 3]), direction)
    return masks, given


def _utf8_names(segments: list[dict], header: dict) -> None:
    """Give slicerio's ``segments`` (read in the order of their index, their header read as ASCII) the names
    of the UTF-8 ``header`` (a non-ASCII name, as Slicer writes it)."""
    indices = sorted({int(match.group(1)) for key in header if (match := re.match(r"^Segment([0-9]+)_", key))})
    for segment, index in zip(segments, indices, strict=True):
        if f"Segment{index}_Name" in header:
            segment["name"] = str(header[f"Segment{index}_Name"])


def _shared_layers(masks: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Masks packed into as few uint8 layers as overlaps allow (Slicer's shared labelmaps):
    the ``(layers, X, Y, Z)`` voxels and each mask's (layer, label value)."""
    layers: list[np.ndarray] = []
    placement: list[tuple[int, int]] = []
    for mask in masks:
        box = mask_box(mask) if mask.any() else tuple(slice(0, 0) for _ in mask.shape)
        inside = mask[box]
        free = [i for i, layer in enumerate(layers) if not layer[box][inside].any()]
        if not free:
            layers.append(np.zeros(mask.shape, np.uint8))
        index = free[0] if free else len(layers) - 1
        label = 1 + sum(1 for layer, _ in placement if layer == index)
        layers[index][box][inside] = label
        placement.append((index, label))
    return np.stack(layers), placement


def _union_box(masks: list[np.ndarray]) -> tuple[slice, ...]:
    """The bounding box of every mask's voxels together (the whole grid when all are empty)."""
    boxes = [mask_box(mask) for mask in masks if mask.any()]
    if not boxes:
        return tuple(slice(0, n) for n in masks[0].shape)
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _segment_names(path: str | Path, masks: dict[str, Volume]) -> list[tuple[str, str]]:
    """Each mask's key and the segment name it is written under: printable (:func:`names.printable_name`; a
    Case's names already are), as a NRRD header line must be; two keys of one such name are refused."""
    written: dict[str, str] = {}
    for key in masks:
        name = printable_name(key)
        if name in written:
            raise ValueError(f"{path}: segments '{shown_name(written[name])}' and '{shown_name(key)}' would both "
                             f"be written as '{name}'")
        written[name] = key
    return [(key, name) for name, key in written.items()]


def write_segmentation(
    path: str | Path, masks: dict[str, Volume], colors: dict[str, tuple[float, float, float]] | None = None,
    crop: bool = False,
) -> None:
    """Write masks sharing one grid as a Slicer .seg.nrrd (one layer per segment, so overlaps survive).

    Args:
        crop: cover the segments' extent only, as Slicer writes them: the grid cropped to the box
            of all their voxels (same voxel positions; ``align_case`` puts them back exactly).
    """
    import slicerio

    if not masks:
        raise DoseSegError(f"{path}: no segments to write")
    grid = next(iter(masks.values()))
    if not all(m.same_grid(grid) for m in masks.values()):
        raise ValueError("all segments must share one grid; align them first")
    box = _union_box([m.array for m in masks.values()]) if crop else tuple(slice(0, n) for n in grid.shape)
    voxels, placement = _shared_layers([m.array[box] for m in masks.values()])
    segments, utf8 = [], {}
    for index, ((layer, label), (key, name)) in enumerate(zip(placement, _segment_names(path, masks), strict=True)):
        stand_in, names = ascii_values({f"Segment{index}_ID": name, f"Segment{index}_Name": name})
        utf8.update(names)  # a non-ASCII name in UTF-8, as Slicer writes it
        segment = {"id": stand_in[f"Segment{index}_ID"], "name": stand_in[f"Segment{index}_Name"],
                   "labelValue": label, "layer": layer}
        if colors and key in colors:
            segment["color"] = list(colors[key])
        segments.append(segment)
    seg = {"voxels": voxels, "ijkToLPS": crop_box(grid, box).index_to_lps, "segments": segments, "encoding": "gzip"}
    write_with_utf8(path, lambda file: slicerio.write_segmentation(file, seg, compression_level=GZIP_LEVEL), utf8)


CT_FILE = "ct.nrrd"  # a patient folder's files (the layout Slicer's export gives)
DOSE_FILE = "dose.nrrd"
POSSIBLE_DOSE_FILE = "possible_dose_mask.nrrd"


def ct_source(folder: Path, case: Case) -> str:
    """How messages name the file a patient's CT came from: its ct.nrrd, or its DICOM CT series."""
    return f"{folder} (DICOM CT series)" if case.dicom_series else str(folder / CT_FILE)


def dose_source(folder: Path, case: Case) -> str:
    """How messages name the file a patient's reference dose came from: its dose.nrrd, or its RTDOSE."""
    return f"{folder} (RTDOSE)" if case.dicom_series else str(folder / DOSE_FILE)


def require_patient(folder: Path) -> None:
    """Refuse a patient folder that is not there (cheap: before any model is loaded)."""
    if not folder.is_dir():
        raise DoseSegError(f"{folder}: patient folder not found")


def read_patient(
    folder: str | Path, mapper: NameMapper | None = None, segmentation: str | Path | None = None,
    series: str | None = None,
) -> Case:
    """Read a patient folder: ct.nrrd, structures/<Name>.nrrd or a .seg.nrrd, optional dose and mask.

    A folder of DICOM files (CT series, RTSTRUCT, RTDOSE, RTPLAN; found by content, a DICOMDIR
    or its folder too) gives the same Case (see ``DoseSegLib.io.dicom.reader``).

    Args:
        folder: the patient folder.
        mapper: structure-name mapping (default aliases when None).
        segmentation: a .seg.nrrd or an RTSTRUCT to use instead of structures/ (or the DICOM
            folder's RTSTRUCT); by default the folder's
            ``segmentation.seg.nrrd`` is used when there is no structures/ folder.
        series: SeriesInstanceUID of the CT series of a DICOM folder holding several (or give
            one of the series' files as ``folder``).
    """
    from DoseSegLib.io.dicom.detect import dicom_location, patient_format, sniff

    folder = named_path(require_path(folder, "read_patient folder"))  # "." is named by the folder it stands for
    if mapper is not None:
        require_type(mapper, NameMapper, "read_patient mapper")
    if folder.is_file():  # a DICOMDIR, or one file of the CT series to use
        folder, file_series = dicom_location(folder)
        series = series or file_series
    require_patient(folder)
    mapper = mapper or NameMapper()
    if patient_format(folder) == "dicom":
        from DoseSegLib.io.dicom.reader import read_dicom_patient

        return with_mapper_results(read_dicom_patient(folder, mapper, series, segmentation), mapper, {})
    ct = read_volume(folder / CT_FILE)
    structures: dict[str, Volume] = {}
    default_seg = folder / "segmentation.seg.nrrd"
    if segmentation is None and not (folder / "structures").is_dir() and default_seg.is_file():
        segmentation = default_seg
    possible = None
    original_names: dict[str, str] = {}
    if segmentation is not None and sniff(Path(segmentation)) == "dicom":  # an RTSTRUCT drawn on this CT
        from DoseSegLib.io.dicom.reader import read_structure_file

        structure_file = read_structure_file(Path(segmentation), ct, "", mapper)
        structures, possible = structure_file.masks, structure_file.body
    elif segmentation is not None:
        structures, original_names = read_named_segmentation(segmentation, mapper)
    else:
        for file in sorted((folder / "structures").glob("*.nrrd")):
            _, name = mapper.read(file, file.name[: -len(".nrrd")], original_names, "remove one, or rename it")
            structures[name] = read_mask(file)
    dose = read_dose(folder / DOSE_FILE) if (folder / DOSE_FILE).is_file() else None
    mask_path = folder / POSSIBLE_DOSE_FILE
    possible = read_mask(mask_path) if mask_path.is_file() else possible
    case = Case(folder.name, ct, structures, dose, possible, source=folder)
    return with_mapper_results(case, mapper, original_names)


def with_mapper_results(case: Case, mapper: NameMapper, original_names: dict[str, str]) -> Case:
    """``case`` with the explicit prescriptions (over an RTPLAN's), notes and original names of a name mapping."""
    missing = [name for name in mapper.prescriptions if name not in case.structures]
    if missing:
        raise DoseSegError(f"patient '{case.name}': --prescription names {', '.join(missing)}, which the "
                           f"patient does not have (targets: {', '.join(case.target_names) or 'none'})")
    case = replace(case, prescriptions={**case.prescriptions, **mapper.prescriptions},
                   original_names={**case.original_names, **original_names})
    notes = [note for note in map(mapper.note, original_names.values()) if note]
    notes += [f"target {name}: dose unknown, not guessed (give it with --prescription {name}=GY)"
              for name in case.unknown_targets]
    for note in notes:
        log.warning("%s: %s", case.name, note)
    notes += [f"prescription of {n}: {gy:g} Gy (given)" for n, gy in mapper.prescriptions.items()]
    return replace(case, notes=notes)


def write_structures(folder: Path, structures: dict[str, Volume]) -> None:
    """Write each mask as ``folder/<name>.nrrd``, the name made safe by :func:`names.structure_filenames`."""
    folder.mkdir(exist_ok=True)
    for name, file in structure_filenames(structures).items():
        mask = structures[name]
        write_volume(folder / file, mask.with_array(mask.array.astype(np.uint8)))


def write_patient(folder: Path, case: Case) -> None:
    """Write a case in the patient-folder layout (folder must exist)."""
    write_volume(folder / CT_FILE, case.ct)
    write_structures(folder / "structures", case.structures)
    if case.dose is not None:
        write_dose(folder / DOSE_FILE, case.dose)
    if case.possible_dose_mask is not None:
        mask = case.possible_dose_mask
        write_volume(folder / POSSIBLE_DOSE_FILE, mask.with_array(mask.array.astype(np.uint8)))
