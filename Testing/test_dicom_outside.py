"""An outside reader (plastimatch, Debian package ``plastimatch``) reads back what DoseSeg writes.

plastimatch fills every contour it reads (a nested contour is not a hole to it): DoseSeg's
keyhole contours give it the same voxels, holes included. Skipped when plastimatch is absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_helpers import write_ct_series

from DoseSegLib.io.dicom.results import read_dicom_target, write_dicom_dose, write_dicom_structures
from DoseSegLib.io.phantom import make_phantom

PLASTIMATCH = shutil.which("plastimatch")
pytestmark = pytest.mark.skipif(PLASTIMATCH is None, reason="plastimatch not installed (apt-get install plastimatch)")


def plastimatch(*args: str) -> None:
    result = subprocess.run([PLASTIMATCH, "convert", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_plastimatch_reads_dosesegs_structures_and_dose(tmp_path: Path) -> None:
    case = make_phantom(shape=(40, 40, 32))
    write_ct_series(tmp_path / "ct", case.ct)
    target = read_dicom_target(tmp_path / "ct")
    x, y = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    radius = np.hypot(x - 20, y - 20)
    ring = np.zeros(case.ct.shape, dtype=bool)  # a ring, and inside its hole an island with a hole of its own
    ring[:, :, 10:20] = ((radius <= 12) & (radius > 5))[:, :, None]
    ring[:, :, 12:16] |= ((radius <= 3.5) & (radius > 1.2))[:, :, None]
    structures = {**{n: case.structures[n] for n in ("Larynx", "PTV70", "Mandible")}, "Ring": case.ct.with_array(ring)}
    write_dicom_structures(tmp_path / "rtstruct.dcm", target, structures)
    plastimatch("--input", str(tmp_path / "rtstruct.dcm"), "--referenced-ct", str(tmp_path / "ct"),
                "--output-prefix", str(tmp_path / "masks"))
    for name, mask in structures.items():
        image = sitk.ReadImage(str(tmp_path / "masks" / f"{name}.mha"))
        assert np.allclose(image.GetOrigin(), case.ct.origin, atol=1e-3), name
        back = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(bool)
        assert np.array_equal(back, mask.array), f"{name}: {back.sum()} voxels for {mask.array.sum()}"
    write_dicom_dose(tmp_path / "rtdose.dcm", target, case.dose)
    plastimatch("--input-dose-img", str(tmp_path / "rtdose.dcm"), "--output-dose-img", str(tmp_path / "dose.mha"))
    dose = sitk.ReadImage(str(tmp_path / "dose.mha"))
    values = sitk.GetArrayFromImage(dose).transpose(2, 1, 0)
    assert values.shape == case.dose.shape and np.abs(values - case.dose.array).max() <= case.dose.array.max() / 65000
