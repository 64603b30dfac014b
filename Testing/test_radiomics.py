"""Radiomics table: identical to pyradiomics called directly, dose features, settings and errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

radiomics = pytest.importorskip("radiomics")
from radiomics import featureextractor  # noqa: E402

import DoseSegLib.analysis.radiomics as dsr  # noqa: E402

SPACING = (1.5, 1.2, 2.0)
ORIGIN = (-20.0, 10.0, 5.0)


def sitk_image(array: np.ndarray):
    """A SimpleITK image of an [i, j, k] array, built by hand (not through Volume.to_sitk)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    return image


def direct(image_array: np.ndarray, mask: np.ndarray, classes: tuple[str, ...] = ("firstorder", "shape"), **settings):
    extractor = featureextractor.RadiomicsFeatureExtractor(**settings)
    extractor.disableAllFeatures()
    for name in classes:
        extractor.enableFeatureClassByName(name)
    result = extractor.execute(sitk_image(image_array), sitk_image(mask.astype(np.uint8)), label=1)
    return {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}


@pytest.fixture(scope="module")
def synthetic() -> tuple[Volume, dict[str, Volume], Volume]:
    rng = np.random.default_rng(0)
    shape = (40, 36, 30)
    i, j, k = np.indices(shape)
    ct = (40 * np.sin(i / 4.0) + 20 * np.cos(j / 3.0) + rng.normal(0, 15, shape)).astype(np.int16)
    sphere = (i - 20) ** 2 + (j - 18) ** 2 + (k - 15) ** 2 < 64
    slab = np.zeros(shape, dtype=bool)
    slab[5:15, 6:30, 4:12] = True
    grid = Volume(ct, SPACING, ORIGIN)
    dose = grid.with_array((70 * np.exp(-((i - 20) ** 2 + (j - 18) ** 2) / 200.0)).astype(np.float32))
    return grid, {"PTV70": grid.with_array(sphere), "Mandible": grid.with_array(slab)}, dose


def test_features_equal_direct_pyradiomics(synthetic) -> None:
    ct, structures, _ = synthetic
    rows = dsr.radiomics_table(ct, structures)
    assert [r["structure"] for r in rows] == ["PTV70", "Mandible"]
    for row in rows:
        expected = direct(ct.array, structures[row["structure"]].array)
        assert list(row)[1:] == list(expected)
        assert "original_firstorder_Mean" in row and "original_shape_MeshVolume" in row
        for key, value in expected.items():
            assert row[key] == value, key


def test_texture_classes_and_dose_features(synthetic) -> None:
    ct, structures, dose = synthetic
    (row,) = dsr.radiomics_table(ct, {"PTV70": structures["PTV70"]}, classes=["firstorder", "glcm"], dose=dose,
                                 dose_bin_width_gy=2.0)
    mask = structures["PTV70"].array
    expected_ct = direct(ct.array, mask, ("firstorder", "glcm"))
    expected_dose = direct(dose.array, mask, ("firstorder", "glcm"), binWidth=2.0)
    assert {k: row[k] for k in expected_ct} == expected_ct
    assert {f"dose_{k}": row[f"dose_{k}"] for k in expected_dose} == {f"dose_{k}": v for k, v in expected_dose.items()}
    assert len(row) == 1 + len(expected_ct) + len(expected_dose)


def test_dose_features_leave_shape_out(synthetic) -> None:
    ct, structures, dose = synthetic
    (row,) = dsr.radiomics_table(ct, {"Mandible": structures["Mandible"]}, dose=dose)
    assert any(k.startswith("original_shape_") for k in row)
    assert not any(k.startswith("dose_original_shape") for k in row)
    assert any(k.startswith("dose_original_firstorder_") for k in row)


def test_parameter_file(synthetic, tmp_path: Path) -> None:
    ct, structures, _ = synthetic
    params = tmp_path / "params.yaml"
    params.write_text("setting:\n  binWidth: 10\nfeatureClass:\n  firstorder: [Mean, Entropy]\n")
    (row,) = dsr.radiomics_table(ct, {"PTV70": structures["PTV70"]}, params=params)
    expected = direct(ct.array, structures["PTV70"].array, ("firstorder",), binWidth=10)
    assert row == {"structure": "PTV70", "original_firstorder_Entropy": expected["original_firstorder_Entropy"],
                   "original_firstorder_Mean": expected["original_firstorder_Mean"]}
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: ten\n")
    with pytest.raises(DoseSegError, match="bad.yaml"):
        dsr.radiomics_table(ct, structures, params=bad)


def test_errors(synthetic) -> None:
    ct, structures, _ = synthetic
    with pytest.raises(DoseSegError, match="glcmx"):
        dsr.radiomics_table(ct, structures, classes=["glcmx"])
    moved = Volume(structures["PTV70"].array, SPACING, (0.0, 0.0, 0.0))
    with pytest.raises(DoseSegError, match="'PTV70' is not on the CT grid"):
        dsr.radiomics_table(ct, {"PTV70": moved})
    single = np.zeros(ct.shape, dtype=bool)
    single[3, 3, 3] = True
    rows = dsr.radiomics_table(ct, {"Dot": ct.with_array(single)})  # skipped with a warning, not an error
    assert rows == [{"structure": "Dot", "warning": rows[0]["warning"]}] and "'Dot'" in rows[0]["warning"]


def test_missing_pyradiomics_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "radiomics", None)
    with pytest.raises(DoseSegError, match="pip install .*pyradiomics"):
        dsr.make_extractor()


def test_pyradiomics_logging_is_quiet(synthetic, caplog: pytest.LogCaptureFixture, capfd) -> None:
    ct, structures, _ = synthetic
    with caplog.at_level(logging.DEBUG):
        dsr.radiomics_table(ct, structures, classes=["firstorder", "glcm"])
    assert not [r for r in caplog.records if r.name.startswith("radiomics") and r.levelno < logging.ERROR]
    assert capfd.readouterr().err == ""


def test_real_patient_equals_direct_pyradiomics(shared_data: Path) -> None:
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.patient import read_patient

    case = align_case(read_patient(shared_data / "openkbp" / "validation" / "pt_201"))
    structures = {name: case.structures[name] for name in ("Brainstem", "PTV63")}
    rows = dsr.radiomics_table(case.ct, structures)
    extractor = featureextractor.RadiomicsFeatureExtractor()
    extractor.disableAllFeatures()
    extractor.enableFeatureClassByName("firstorder")
    extractor.enableFeatureClassByName("shape")
    for row in rows:
        result = extractor.execute(case.ct.to_sitk(), structures[row["structure"]].to_sitk(), label=1)
        expected = {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}
        assert {k: v for k, v in row.items() if k != "structure"} == expected


def _relative_equal(row: dict, expected: dict, prefix: str = "") -> None:
    assert set(row) - {"structure"} >= {prefix + k for k in expected}
    for key, value in expected.items():
        assert row[prefix + key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("where", ["corner", "far_corner", "whole"])
def test_cropped_images_give_the_full_image_values(synthetic, where: str) -> None:
    """Structures touching the grid's edges (the box margin clipped) or filling it: same features as uncropped."""
    ct, _, dose = synthetic
    mask = np.zeros(ct.shape, dtype=bool)
    region = {"corner": np.s_[:6, :5, :4], "far_corner": np.s_[-7:, -6:, -5:], "whole": np.s_[:, :, :]}[where]
    mask[region] = True
    if where == "whole":
        mask[0, 0, 0] = False  # the whole grid but one voxel: every face touched
    classes = ("firstorder", "shape", "glcm", "glszm")
    (row,) = dsr.radiomics_table(ct, {"Edge": ct.with_array(mask)}, classes=classes, dose=dose)
    _relative_equal(row, direct(ct.array, mask, classes))
    _relative_equal(row, direct(dose.array, mask, ("firstorder", "glcm", "glszm"), binWidth=1.0), "dose_")


def test_filtered_image_types_see_the_whole_image(synthetic, tmp_path: Path) -> None:
    """A LoG image depends on the surroundings: no cropping then, values equal pyradiomics on the full image."""
    ct, structures, _ = synthetic
    params = tmp_path / "log.yaml"
    params.write_text("imageType:\n  LoG: {sigma: [3.0]}\nfeatureClass:\n  firstorder: [Mean]\n")
    (row,) = dsr.radiomics_table(ct, {"Mandible": structures["Mandible"]}, params=params)
    extractor = featureextractor.RadiomicsFeatureExtractor(str(params))
    result = extractor.execute(sitk_image(ct.array), sitk_image(structures["Mandible"].array.astype(np.uint8)),
                               label=1)
    assert row["log-sigma-3-0-mm-3D_firstorder_Mean"] == pytest.approx(
        float(result["log-sigma-3-0-mm-3D_firstorder_Mean"]), rel=1e-6)


def test_diagnostics_give_indices_on_the_whole_grid(synthetic) -> None:
    ct, structures, _ = synthetic
    provenance: dict = {}
    dsr.radiomics_table(ct, {"Mandible": structures["Mandible"]}, provenance=provenance)
    diagnostics = provenance["structures"]["Mandible"]
    assert diagnostics["Mask-original_BoundingBox"] == [5, 6, 4, 10, 24, 8]
    assert diagnostics["Mask-original_CenterOfMassIndex"] == pytest.approx([9.5, 17.5, 7.5])
    assert diagnostics["Image-full_Size"] == list(ct.shape)
    start, size = diagnostics["Image-crop_Box"][:3], diagnostics["Image-crop_Box"][3:]
    assert start == [0, 0, 0] and size == [22, 36, 19]  # box grown by 2 + padDistance 5, clipped at the edges


def test_worker_processes_give_the_same_rows_and_diagnostics(synthetic) -> None:
    ct, structures, dose = synthetic
    many = {**structures, "Sphere2": structures["PTV70"], "Slab2": structures["Mandible"]}
    serial, parallel = {}, {}
    rows = dsr.radiomics_table(ct, many, dose=dose, provenance=serial)
    with dsr.start_radiomics(ct, many, dose=dose, provenance=parallel, workers=2) as job:
        assert job.job is not None and len(job.job.processes) == 2, "two worker processes started at once"
        assert job.result() == rows
    assert parallel == serial
    assert all(p.poll() is not None for p in job.job.processes), "no worker left running"


def test_workers_start_from_a_script_without_a_main_guard(synthetic, tmp_path: Path) -> None:
    """Worker processes never import the caller's main script again (multiprocessing's spawn does)."""
    import subprocess

    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\n"
        "from DoseSegLib.core.volume import Volume\n"
        "from DoseSegLib.analysis.radiomics import radiomics_table\n"
        "print('script body ran', flush=True)\n"
        "i, j, k = np.indices((20, 20, 20))\n"
        "ct = Volume((10 * i).astype(np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))\n"
        "ball = ct.with_array((i - 10) ** 2 + (j - 10) ** 2 + (k - 10) ** 2 < 25)\n"
        "rows = radiomics_table(ct, {'A': ball, 'B': ball}, workers=2)\n"
        "print(len(rows), rows[0] == {**rows[1], 'structure': 'A'})\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"}, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["script body ran", "2 True"]


def test_a_failing_worker_is_a_clear_error(synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    ct, structures, _ = synthetic
    monkeypatch.setattr(dsr, "_encode", lambda *args: b"not json\n")
    with pytest.raises(DoseSegError, match="worker process failed: json.decoder.JSONDecodeError"):
        dsr.radiomics_table(ct, structures, workers=2)


def test_workers_are_chosen_for_large_structures_only(synthetic) -> None:
    ct, structures, _ = synthetic
    with dsr.start_radiomics(ct, structures, workers=None) as job:
        assert job.job is None, "small structures are measured in this process"
    assert dsr.balanced_groups([10, 1, 7, 3, 3], 2) == [[0, 4], [2, 3, 1]]  # totals 13 and 11
