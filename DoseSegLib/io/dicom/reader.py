"""A DICOM patient folder (CT series, RTSTRUCT, RTDOSE, RTPLAN) to the same Case as the NRRD layout."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from DoseSegLib.core.case import Case, is_ptv
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.detect import DicomIndex, read_header, scan_folder
from DoseSegLib.io.dicom.rtdose import reference_dose
from DoseSegLib.io.dicom.rtplan import Prescriptions, plan_prescriptions
from DoseSegLib.io.dicom.rtstruct import read_rois, referenced_series, structure_masks, structure_set_frame
from DoseSegLib.io.dicom.series import SeriesGeometry, choose_series, group_series, read_series, series_geometry

log = logging.getLogger(__name__)


def ct_geometry(index: DicomIndex, series: str | None = None) -> SeriesGeometry:
    """The chosen CT series' geometry: ``series``, the only one, or the one the RTSTRUCT references."""
    referenced = set().union(*(referenced_series(ds) for ds in index.of("RTSTRUCT")))
    groups = group_series(index.of("CT"))
    uid = choose_series(index.folder, groups, series, referenced)
    return series_geometry(index.folder, groups[uid])


def structure_set_path(index: DicomIndex, geometry: SeriesGeometry) -> Path | None:
    """The RTSTRUCT drawn on the chosen series (or the only one), None when there is none."""
    sets = index.of("RTSTRUCT")
    if not sets:
        return None
    on_series = [ds for ds in sets if geometry.series_uid in referenced_series(ds)]
    candidates = on_series or sets
    if len(candidates) > 1:
        raise DoseSegError(f"{index.folder}: {len(candidates)} RTSTRUCT files for one CT "
                           f"({', '.join(Path(ds.filename).name for ds in candidates)}); keep one")
    return Path(candidates[0].filename)


@dataclass
class StructureFile:
    """An RTSTRUCT file read onto a CT grid.

    Attributes:
        masks: the structures by canonical name.
        body: the EXTERNAL ROI (None without one).
        canonical_names, given_names: every ROI's name by ROI number, canonical and as written.
        fine: the structures on sub-voxel grids for the DVH (``io.dicom.fine``; asked with ``fine=True``).
    """

    masks: dict[str, Volume]
    body: Volume | None
    canonical_names: dict[int, str]
    given_names: dict[int, str]
    fine: dict[str, Volume] = field(default_factory=dict)


def read_structure_file(path: Path, grid: Volume, frame: str, mapper: NameMapper, fine: bool = False) -> StructureFile:
    """An RTSTRUCT file's masks on ``grid``, its body and its ROI names (``frame`` '' skips the check);
    with ``fine``, each structure also on its sub-voxel grid."""
    ds = read_header(Path(path))
    if ds is None or str(ds.get("Modality", "")).upper() != "RTSTRUCT":
        raise DoseSegError(f"{path}: not a DICOM RTSTRUCT")
    found = structure_set_frame(ds)
    if found and frame and found != frame:
        raise DoseSegError(f"{path}: RTSTRUCT in Frame of Reference {found}, the CT series in {frame}; "
                           "use the structure set drawn on this CT")
    rois = read_rois(ds)
    sub_voxel: dict[str, Volume] | None = {} if fine else None
    masks, body = structure_masks(ds, grid, frame, mapper, rois, sub_voxel)
    return StructureFile(masks, body, {roi.number: mapper.canonical(roi.name) for roi in rois},
                         {roi.number: roi.name for roi in rois}, sub_voxel or {})


def _prescriptions(index: DicomIndex, roi_names: dict[int, str], frame: str, mapper: NameMapper,
                   structures: dict[str, Volume]) -> Prescriptions:
    """The RTPLAN's prescriptions; an unusable RTPLAN is only a warning when ``--prescription`` gives the
    dose of every target (named like one, ``PTV...``); a prescription matching no structure is a warning."""
    try:
        found = plan_prescriptions(index.of("RTPLAN"), roi_names, frame, index.folder,
                                   lambda description: mapper.match(description, structures))
    except DoseSegError as exc:
        targets = [n for n in structures if is_ptv(n)]
        if mapper.prescriptions and all(n in mapper.prescriptions for n in targets):
            log.warning("%s; ignored: the prescriptions come from --prescription", exc)
            return Prescriptions()
        raise DoseSegError(f"{exc} (or give every target's dose with --prescription NAME=GY: the study then runs "
                           "without its RTPLAN)") from exc
    for name, gy in found.doses.items():
        if name not in structures:
            log.warning("%s: %s (%g Gy, for %s) matches no structure (structures: %s)", index.of("RTPLAN")[0].filename,
                        found.references[name], gy, name, ", ".join(structures) or "none")
    return found


def read_dicom_patient(
    folder: str | Path, mapper: NameMapper | None = None, series: str | None = None,
    structure_file: str | Path | None = None,
) -> Case:
    """Read a folder of DICOM files (found by content; subfolders and a DICOMDIR included) into a Case.

    The CT keeps its DICOM geometry (LPS, slices sorted along the normal), structures are
    rasterised at CT resolution (slab convention, even-odd rule) and, for the DVH, on sub-voxel
    grids where small enough (``fine_structures``, see ``io.dicom.fine``), the EXTERNAL ROI becomes the
    possible-dose mask (the body), the RTDOSE is the reference dose on its own grid and the
    RTPLAN's target prescriptions are recorded on the case.

    Args:
        folder: the patient folder.
        mapper: structure-name mapping (default aliases when None).
        series: SeriesInstanceUID of the CT series, needed only when the folder holds several
            and no RTSTRUCT says which.
        structure_file: an RTSTRUCT to use instead of the folder's.
    """
    folder = Path(folder)
    mapper = mapper or NameMapper()
    index = scan_folder(folder)
    geometry = ct_geometry(index, series)
    frame = geometry.frame_of_reference
    ct = read_series(geometry)
    structure_set = structure_file or structure_set_path(index, geometry)
    read = (StructureFile({}, None, {}, {}) if structure_set is None
            else read_structure_file(Path(structure_set), geometry.grid, frame, mapper, fine=True))
    structures, roi_names = read.masks, read.canonical_names
    dose = reference_dose(index.of("RTDOSE"), frame, folder)
    prescriptions = _prescriptions(index, roi_names, frame, mapper, structures)
    log.info("%s: DICOM patient, CT %s, %d structures, dose %s, prescriptions %s", folder, ct.shape,
             len(structures), "yes" if dose else "no", prescriptions.doses or "none")
    original_names = {canonical: read.given_names[number] for number, canonical in roi_names.items()
                      if canonical in structures}
    return Case(folder.name, ct, structures, dose.volume if dose else None, read.body, prescriptions.highest,
                source=folder, prescriptions=prescriptions.doses, dicom_series=geometry.series_uid,
                original_names=original_names, fine_structures=read.fine)
