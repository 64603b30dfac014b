"""A run's predicted dose and auto-segmented structures as RTDOSE and RTSTRUCT next to its NRRD outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from DoseSegLib.core.alignment import resample, resample_mask
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.export import mask_contours, write_rtdose, write_rtstruct
from DoseSegLib.io.dicom.reader import ct_geometry


def write_dicom_results(
    out: Path, ct_folder: Path, dose: Volume | None, structures: dict[str, Volume], series: str | None = None,
    anonymise: bool = False,
) -> list[Path]:
    """Write ``rtdose.dcm`` and ``rtstruct.dcm`` into ``out`` for the CT series of ``ct_folder``.

    The dose and masks are put onto the CT grid by physical position first (a no-op when they
    already are on it). An empty ``structures`` writes no RTSTRUCT. ``anonymise``: see ``export``.
    """
    ct = ct_geometry(scan_folder(Path(ct_folder)), series)
    written = []
    if dose is not None:
        on_ct = dose if dose.same_grid(ct.grid) else resample(dose, ct.grid, "linear", 0.0)
        written.append(write_rtdose(Path(out) / "rtdose.dcm", on_ct.with_array(on_ct.array.astype(np.float32)), ct,
                                    anonymise=anonymise))
    if structures:
        contours = {name: mask_contours(mask if mask.same_grid(ct.grid) else resample_mask(mask, ct.grid))
                    for name, mask in structures.items()}
        written.append(write_rtstruct(Path(out) / "rtstruct.dcm", contours, ct, anonymise=anonymise))
    return written
