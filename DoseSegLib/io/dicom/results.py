"""A run's predicted dose and auto-segmented structures as RTDOSE and RTSTRUCT next to its NRRD outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.export import mask_contours, write_rtdose, write_rtstruct
from DoseSegLib.io.dicom.reader import ct_geometry
from DoseSegLib.io.dicom.series import SeriesGeometry


def read_ct_geometry(ct_folder: Path, series: str | None = None) -> SeriesGeometry:
    """The geometry of the CT series of ``ct_folder`` (one scan of its headers) that the results refer to."""
    return ct_geometry(scan_folder(Path(ct_folder)), series)


def write_dicom_dose(path: Path, ct: SeriesGeometry, dose: Volume, anonymise: bool = False) -> Path:
    """Write ``dose`` (Gy) as an RTDOSE at ``path``, put onto the CT grid by physical position first."""
    on_ct = dose if dose.same_grid(ct.grid) else resample(dose, ct.grid, "linear", 0.0)
    return write_rtdose(Path(path), on_ct.with_array(on_ct.array.astype(np.float32)), ct, anonymise=anonymise)


def write_dicom_structures(path: Path, ct: SeriesGeometry, structures: dict[str, Volume],
                           anonymise: bool = False) -> Path:
    """Write the masks of ``structures`` as an RTSTRUCT at ``path``, each put onto the CT grid first."""
    contours = {name: mask_contours(mask if mask.same_grid(ct.grid) else resample_mask(mask, ct.grid))
                for name, mask in structures.items()}
    return write_rtstruct(Path(path), contours, ct, anonymise=anonymise)


def write_dicom_results(
    out: Path, ct_folder: Path, dose: Volume | None, structures: dict[str, Volume], series: str | None = None,
    anonymise: bool = False,
) -> list[Path]:
    """Write ``rtdose.dcm`` and ``rtstruct.dcm`` into ``out`` for the CT series of ``ct_folder``.

    The dose and masks are put onto the CT grid by physical position first (a no-op when they
    already are on it). An empty ``structures`` writes no RTSTRUCT. ``anonymise``: see ``export``.
    """
    ct = read_ct_geometry(ct_folder, series)
    written = []
    if dose is not None:
        written.append(write_dicom_dose(Path(out) / "rtdose.dcm", ct, dose, anonymise))
    if structures:
        written.append(write_dicom_structures(Path(out) / "rtstruct.dcm", ct, structures, anonymise))
    return written
