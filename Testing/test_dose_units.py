"""Dose units travel with the data: written in the NRRD header, checked (and cGy converted) on read."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pytest

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_dose, write_dose, write_volume

DOSE = Volume(np.linspace(0, 70, 24, dtype=np.float32).reshape(2, 3, 4), (2.0, 2.0, 3.0), (1.0, 2.0, 3.0))


def test_dose_is_written_with_its_unit(tmp_path: Path) -> None:
    write_dose(tmp_path / "dose.nrrd", DOSE)
    assert nrrd.read_header(str(tmp_path / "dose.nrrd"))["DoseUnits"] == "GY"
    np.testing.assert_array_equal(read_dose(tmp_path / "dose.nrrd").array, DOSE.array)


def test_cgy_header_is_converted_and_unknown_units_refused(tmp_path: Path) -> None:
    write_volume(tmp_path / "cgy.nrrd", DOSE.with_array(DOSE.array * 100), {"DoseUnits": "CGY"})
    np.testing.assert_allclose(read_dose(tmp_path / "cgy.nrrd").array, DOSE.array, rtol=1e-6)
    write_volume(tmp_path / "no_unit.nrrd", DOSE)  # no header: taken as Gy, as before
    np.testing.assert_array_equal(read_dose(tmp_path / "no_unit.nrrd").array, DOSE.array)
    write_volume(tmp_path / "relative.nrrd", DOSE, {"DoseUnits": "RELATIVE"})
    with pytest.raises(DoseSegError, match=r"relative.nrrd: dose units 'RELATIVE' \(DoseUnits\) are not GY or CGY"):
        read_dose(tmp_path / "relative.nrrd")


def test_patient_folder_dose_has_its_unit(tmp_path: Path, phantom_case) -> None:
    from DoseSegLib.io.patient import write_patient

    write_patient(tmp_path, phantom_case)
    assert nrrd.read_header(str(tmp_path / "dose.nrrd"))["DoseUnits"] == "GY"
