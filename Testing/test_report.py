"""Report figures (radiological orientation, physical aspect) and the HTML report itself."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.analysis.dvh import compute_dvhs
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.phantom import make_phantom
from DoseSegLib.run.compare import compare_doses
from DoseSegLib.run.report import render_report
from DoseSegLib.run.results import PatientResult
from DoseSegLib.viz.figures import centre_index, dvh_png, lps_oriented, plane

PNG = b"\x89PNG\r\n\x1a\n"


def _marked(shape: tuple[int, int, int] = (6, 5, 4)) -> Volume:
    """A volume whose one bright voxel sits at the patient's left, anterior, superior corner (LPS i, j, k)."""
    array = np.zeros(shape)
    array[-1, 0, -1] = 1  # largest x (left), smallest y (anterior), largest z (superior)
    return Volume(array, (1.0, 2.0, 3.0), (0, 0, 0))


@pytest.mark.parametrize(
    ("name", "row", "column"),
    [("axial", "top", "right"),  # anterior up, patient's left on the image's right
     ("coronal", "top", "right"),  # superior up, patient's left on the right
     ("sagittal", "top", "left")],  # superior up, anterior on the left
)
def test_planes_follow_radiological_convention(name: str, row: str, column: str) -> None:
    array, spacing = lps_oriented(_marked())
    index = {"axial": 3, "coronal": 0, "sagittal": 5}[name]
    image, extent = plane(array, spacing, name, index)
    r, c = np.argwhere(image == 1)[0]
    assert r == (0 if row == "top" else image.shape[0] - 1)
    assert c == (0 if column == "left" else image.shape[1] - 1)
    width, height = abs(extent[1] - extent[0]), abs(extent[3] - extent[2])
    pixel = {"axial": (1.0, 2.0), "coronal": (1.0, 3.0), "sagittal": (2.0, 3.0)}[name]
    assert (width / image.shape[1], height / image.shape[0]) == pixel  # physical aspect


def test_grids_stored_in_other_orientations_are_shown_the_same() -> None:
    lps = _marked()
    # the same anatomy stored RAS-first: i runs to the right, j to anterior; k permuted first
    ras = np.flip(lps.array, axis=(0, 1)).transpose(2, 0, 1)
    direction = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=float)  # columns: directions of i, j, k
    stored = Volume(ras, (3.0, 1.0, 2.0), (0, 0, 0), direction)
    array, spacing = lps_oriented(stored)
    np.testing.assert_array_equal(array, lps.array)
    assert spacing == (1.0, 2.0, 3.0)
    assert centre_index(stored.with_array(ras > 0)) == (5, 0, 3)


def test_dvh_figure_is_a_png() -> None:
    case = make_phantom(shape=(32, 32, 24))
    assert dvh_png(compute_dvhs(case.dose, case.structures), prescription=70.0).startswith(PNG)


def _result(case: Case, dose: Volume, radiomics: list | None = None) -> PatientResult:
    comparison = compare_doses(dose, case) if case.dose is not None else None
    return PatientResult(
        case.name, Path("/data") / case.name, case, dose, evaluate_plan(replace(case, dose=dose)), radiomics or [],
        comparison, dict.fromkeys(case.structures, "patient"), ["a <note> & more"],
        {"dose": {"name": "m", "version": "1", "sha256": "ab" * 32}}, "cpu", {"load models": 1.0, "read": 0.1},
    )


def test_report_shows_figures_tables_and_models() -> None:
    case = make_phantom(shape=(40, 40, 32))
    result = _result(case, case.dose.with_array(case.dose.array * 0.9))
    report = render_report(result)
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", report)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "a &lt;note&gt; &amp; more" in report  # text is escaped
    assert "ab" * 32 in report and "Predicted vs reference dose" in report
    assert f"{result.comparison.dose_error:.2f} Gy" in report
    assert ">fail<" in report or ">pass<" in report
    assert "Radiomics" not in report and "radiomics.csv" not in report


def test_report_without_reference_has_no_comparison() -> None:
    case = make_phantom(shape=(40, 40, 32))
    dose = case.dose
    rows = [{"structure": n, "original_firstorder_Mean": 40.0, "original_shape_MeshVolume": 2000.0}
            for n in case.structures]
    report = render_report(_result(replace(case, dose=None), dose, rows))
    assert len(re.findall(r"data:image/png;base64,", report)) == 2
    assert "Predicted vs reference dose" not in report and "dose_difference.nrrd" not in report
    assert "Radiomics (CT)" in report and "2.00" in report  # mesh volume shown in cc
