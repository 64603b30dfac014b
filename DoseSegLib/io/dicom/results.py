"""A run's predicted dose and auto-segmented structures as RTDOSE and RTSTRUCT next to its NRRD outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.carry import RoiPlan, model_text
from DoseSegLib.io.dicom.deid import Deidentifier
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.export import Generation, RoiStyle, mask_contours, write_rtdose, write_rtstruct
from DoseSegLib.io.dicom.reader import ct_geometry, structure_set_path
from DoseSegLib.io.dicom.series import SeriesGeometry


@dataclass
class DicomTarget:
    """Where DICOM results go: the CT series, what was read with it, and the de-identification.

    Attributes:
        ct: the CT series' geometry and headers.
        plan: header of the folder's one RTPLAN in the CT's frame (the RTDOSE references it), else None.
        structure_set: the RTSTRUCT drawn on the CT (its ROIs' names, types and colours), else None.
        deid: de-identifies every written object when given.
    """

    ct: SeriesGeometry
    plan: Any = None
    structure_set: Path | None = None
    deid: Deidentifier | None = None


def read_ct_geometry(ct_folder: Path, series: str | None = None) -> SeriesGeometry:
    """The geometry of the CT series of ``ct_folder`` (one scan of its headers) that the results refer to."""
    return ct_geometry(scan_folder(Path(ct_folder)), series)


def read_dicom_target(ct_folder: Path, series: str | None = None, deid: Deidentifier | None = None) -> DicomTarget:
    """The CT series of ``ct_folder`` with its RTPLAN and RTSTRUCT, from one scan of the folder's headers."""
    index = scan_folder(Path(ct_folder))
    ct = ct_geometry(index, series)
    plans = [p for p in index.of("RTPLAN") if str(p.get("FrameOfReferenceUID", "")) in ("", ct.frame_of_reference)]
    return DicomTarget(ct, plans[0] if len(plans) == 1 else None, structure_set_path(index, ct), deid)


def write_dicom_dose(path: Path, target: DicomTarget, dose: Volume) -> Path:
    """Write ``dose`` (Gy) as an RTDOSE at ``path``, put onto the CT grid by physical position first."""
    grid = target.ct.grid
    on_ct = dose if dose.same_grid(grid) else resample(dose, grid, "linear", 0.0)
    return write_rtdose(Path(path), on_ct.with_array(on_ct.array.astype(np.float32)), target.ct,
                        deid=target.deid, plan=target.plan)


def write_dicom_structures(path: Path, target: DicomTarget, structures: dict[str, Volume],
                           models: dict[str, dict] | None = None) -> Path:
    """Write DoseSeg's auto-segmented ``structures`` as an RTSTRUCT at ``path``, each put onto the CT grid
    first: AUTOMATIC ROIs naming the segmentation model of ``models`` (a run's, as in summary.json)."""
    grid = target.ct.grid
    contours = {name: mask_contours(mask if mask.same_grid(grid) else resample_mask(mask, grid))
                for name, mask in structures.items()}
    style = RoiStyle(generation=Generation.AUTOMATIC, algorithm=model_text(models or {}))
    return write_rtstruct(Path(path), contours, target.ct, dict.fromkeys(contours, style), deid=target.deid)


def write_roi_plan(path: Path, target: DicomTarget, plan: RoiPlan) -> Path:
    """Write the ROIs of ``plan`` (``carry.plan_rois``: DoseSeg's and the clinician's) as an RTSTRUCT."""
    return write_rtstruct(Path(path), plan.contours, target.ct, plan.styles, deid=target.deid)


def write_dicom_results(
    out: Path, ct_folder: Path, dose: Volume | None, structures: dict[str, Volume], series: str | None = None,
    deid: Deidentifier | None = None, models: dict[str, dict] | None = None,
) -> list[Path]:
    """Write ``rtdose.dcm`` and ``rtstruct.dcm`` into ``out`` for the CT series of ``ct_folder``.

    The dose and masks are put onto the CT grid by physical position first (a no-op when they
    already are on it). An empty ``structures`` writes no RTSTRUCT. ``deid``: see ``deid``.
    """
    target = read_dicom_target(ct_folder, series, deid)
    written = []
    if dose is not None:
        written.append(write_dicom_dose(Path(out) / "rtdose.dcm", target, dose))
    if structures:
        written.append(write_dicom_structures(Path(out) / "rtstruct.dcm", target, structures, models))
    return written
