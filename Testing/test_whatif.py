"""The what-if session: edits change the prediction and metrics exactly as a fresh predict-dose + dvh.

The session normalises each prediction to the prescription as ``predict-dose`` does by default (checked
against it), and shows the network's own dose with ``normalise=False`` (checked against
``predict-dose --no-normalise``).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from DoseSegLib.cli.main import main
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.patient import read_dose, read_volume, write_volume


@pytest.fixture(scope="module")
def phantom_session(tmp_path_factory: pytest.TempPathFactory):
    from DoseSegLib import WhatIfSession
    from DoseSegLib.io.phantom import write_phantom_patient

    folder = tmp_path_factory.mktemp("whatif") / "phantom"
    write_phantom_patient(folder)
    return folder, WhatIfSession(folder, device="cpu")


def _cli_metrics(folder: Path, out: Path, normalise: bool = True) -> tuple[np.ndarray, dict[str, dict[str, str]]]:
    command = ["predict-dose", str(folder), "-o", str(out / "pred"), "--device", "cpu",
               *([] if normalise else ["--no-normalise"])]
    assert main(command) in (0, None)
    notes = (out / "pred" / folder.name / "notes.txt").read_text()
    assert any(line.startswith("normalised: ") for line in notes.splitlines()) is normalise
    assert ("not normalised: --no-normalise" in notes) is not normalise
    dose = out / "pred" / folder.name / "dose.nrrd"
    main(["dvh", str(folder), "--dose", str(dose), "-o", str(out / "dvh")])
    with open(out / "dvh" / "dvh_metrics.csv", newline="") as f:
        return read_dose(dose).array, {row["structure"]: row for row in csv.DictReader(f)}


def _check_against_cli(session, folder: Path, edits: dict[str, np.ndarray], out: Path,
                       normalise: bool = True) -> None:
    before = session.predict()
    for name, mask in edits.items():
        session.set_mask(name, mask)
        file = folder / "structures" / f"{name}.nrrd"
        ct = read_volume(folder / "ct.nrrd")
        write_volume(file, ct.with_array(mask.astype(np.uint8)))
    after = session.predict()
    assert (after.normalisation is not None) is normalise
    dose, rows = _cli_metrics(folder, out, normalise)
    assert np.abs(after.dose.array - dose).max() < 0.05
    assert not np.allclose(after.dose.array, before.dose.array, atol=0.05)
    for row in after.metrics:
        cli = rows[row["structure"]]
        for key in ("Volume[cc]", "Mean[Gy]", "D95%[Gy]", "D2%[Gy]"):
            assert isinstance(row[key], float)
            assert row[key] == pytest.approx(float(cli[key]), abs=0.05), (row["structure"], key)


def test_edit_matches_fresh_predict_dose(phantom_session, tmp_path: Path) -> None:
    folder, session = phantom_session
    ptv = session.structures["PTV70"].array
    parotid = session.structures["LeftParotid"].array
    edits = {"PTV70": ndimage.binary_dilation(ptv, iterations=2), "LeftParotid": ndimage.binary_erosion(parotid)}
    _check_against_cli(session, folder, edits, tmp_path)


def test_unnormalised_session_matches_predict_dose_no_normalise(phantom_dir: Path, tmp_path: Path) -> None:
    from DoseSegLib import WhatIfSession

    session = WhatIfSession(phantom_dir, device="cpu", normalise=False)
    assert session.notes == []
    ptv = session.structures["PTV70"].array
    _check_against_cli(session, phantom_dir, {"PTV70": ndimage.binary_dilation(ptv)}, tmp_path, normalise=False)


def test_normalised_session_meets_the_convention_after_each_edit(phantom_session) -> None:
    """Each edit's prediction is normalised anew: the primary target's metric stays at the convention."""
    _, session = phantom_session
    convention = session.trust.convention
    assert convention is not None and convention.metric == "mean"
    ptv = session.structures["PTV70"].array
    for mask in (ndimage.binary_dilation(ptv), ptv):
        session.set_mask("PTV70", mask)
        result = session.predict()
        assert result.normalisation is not None and result.normalisation.structure == "PTV70"
        assert result.metric("PTV70", "mean") == pytest.approx(convention.ratio * 70.0, rel=2e-3)


def test_a_session_that_cannot_normalise_says_so_once(tiny_models: Path, phantom_dir: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """No convention beside the weights, then an implausible factor: each said once, the network's dose shown."""
    from model_helpers import write_tiny_convention

    from DoseSegLib import WhatIfSession

    raw = WhatIfSession(phantom_dir, device="cpu", normalise=False).predict().dose.array
    with caplog.at_level("WARNING", logger="DoseSegLib"):
        session = WhatIfSession(phantom_dir, device="cpu")
        first, second = session.predict(), session.predict()
    assert first.normalisation is None and second.normalisation is None
    np.testing.assert_array_equal(second.dose.array, raw)
    said = [r.getMessage() for r in caplog.records if "not normalised" in r.getMessage()]
    assert len(said) == 1 and "no prescription convention" in said[0] and session.notes == said
    write_tiny_convention(tiny_models, "mean", 5.0)  # 5 x 70 Gy from a few Gy: a factor far outside 0.7-1.4
    caplog.clear()
    with caplog.at_level("WARNING", logger="DoseSegLib"):
        session = WhatIfSession(phantom_dir, device="cpu")
        results = [session.predict() for _ in range(2)]
    assert all(r.normalisation is None for r in results)
    said = [r.getMessage() for r in caplog.records if "outside 0.7-1.4" in r.getMessage()]
    assert len(said) == 1 and session.notes == said


def test_alias_name_and_volume_input(phantom_session) -> None:
    _, session = phantom_session
    parotid = session.structures["LeftParotid"]
    assert session.set_mask("Parotid_L", parotid) == "LeftParotid"
    with pytest.raises(DoseSegError, match="shape"):
        session.set_mask("PTV70", np.ones((3, 3, 3), bool))
    with pytest.raises(DoseSegError, match="empty"):
        session.set_mask("PTV70", np.zeros(parotid.shape, bool))


def test_new_structure_is_added(phantom_session) -> None:
    _, session = phantom_session
    box = np.zeros(session.case.ct.shape, bool)
    box[30:34, 30:34, 20:24] = True
    session.set_mask("Ring", box)
    result = session.predict()
    assert result.metric("Ring", "Volume[cc]") == pytest.approx(box.sum() * session.case.ct.voxel_volume_cc, rel=1e-6)


@pytest.mark.slow
def test_real_patient_edit_matches_cli(shared_data: Path, tmp_path: Path) -> None:
    from DoseSegLib import WhatIfSession

    folder = tmp_path / "pt_201"
    shutil.copytree(shared_data / "openkbp" / "validation" / "pt_201", folder)
    (folder / "dose.nrrd").unlink()
    session = WhatIfSession(folder, device="cpu")
    ptv = session.structures["PTV70"].array
    _check_against_cli(session, folder, {"PTV70": ndimage.binary_erosion(ptv, iterations=2)}, tmp_path)


def test_sensitivity_of_a_non_input_structure_is_the_dvh_derivative(phantom_session) -> None:
    _, session = phantom_session
    ring = np.zeros(session.case.ct.shape, bool)
    ring[28:36, 28:36, 18:26] = True
    session.set_mask("Ring", ring)
    dose = session.predict_dose().array
    grad = session.sensitivity("Ring", "mean")
    expected = (dose - dose[ring].mean()) / ring.sum()  # d/dm_v of sum(d m) / sum(m): no network path
    assert grad.shape == ring.shape and grad.dtype == np.float32
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_normalised_sensitivity_includes_the_factors_change(phantom_session, phantom_dir: Path) -> None:
    """The normalised PTV70 mean is the convention's dose whatever the PTV70 mask: its derivative is zero,
    while the network's own PTV70 mean moves with the mask."""
    from DoseSegLib import WhatIfSession

    _, session = phantom_session
    assert session.trust.convention is not None and session.trust.convention.metric == "mean"
    normalised = session.sensitivity("PTV70", "mean")
    raw = WhatIfSession(phantom_dir, device="cpu", normalise=False).sensitivity("PTV70", "mean")
    assert np.abs(raw).max() > 1e-3
    assert np.abs(normalised).max() < 1e-4 * np.abs(raw).max()


def test_normalised_sensitivity_matches_finite_differences_target_on_oar(phantom_session) -> None:
    """Growing PTV70 where the sensitivity is highest, then lowest, moves the normalised parotid mean
    (through the network and the factor) as the derivative says: sign, order, within a factor 2."""
    _, session = phantom_session
    _boundary_check(session, "LeftParotid", "PTV70", "mean", "Mean[Gy]")


def test_sensitivity_rejects_metrics_without_derivative(phantom_session) -> None:
    _, session = phantom_session
    with pytest.raises(DoseSegError, match="D2%"):
        session.sensitivity("PTV70", "Max[Gy]")
    with pytest.raises(DoseSegError, match="no structure 'Nope'"):
        session.sensitivity("Nope")


def _boundary_check(session, structure: str, wrt: str, metric: str, key: str, count: int = 40) -> None:
    """Add the ``count`` boundary voxels of highest, then lowest, sensitivity: sign, order, factor 2."""
    base = session.predict().metric(structure, key)
    grad = session.sensitivity(structure, metric, wrt)
    mask = session.structures[wrt].array
    ring = ndimage.binary_dilation(mask) & ~mask & session.case.possible_dose_mask.array
    voxels = np.flatnonzero(ring)
    ranked = voxels[np.argsort(grad.ravel()[voxels])]
    changes = []
    for picked in (ranked[-count:], ranked[:count]):
        edited = mask.copy().ravel()
        edited[picked] = True
        session.set_mask(wrt, edited.reshape(mask.shape))
        actual = session.predict().metric(structure, key) - base
        estimate = float(grad.ravel()[picked].sum())
        session.set_mask(wrt, mask)
        assert np.sign(actual) == np.sign(estimate), (actual, estimate)
        assert 0.5 <= actual / estimate <= 2.0, (actual, estimate)
        changes.append(actual)
    assert changes[0] > changes[1]


@pytest.fixture(scope="module")
def real_session(shared_data: Path):
    from DoseSegLib import WhatIfSession

    # the network's own dose: finite differences of the derivative through the network alone (a normalised
    # session's derivative is checked on the phantom: test_normalised_sensitivity_*)
    return WhatIfSession(shared_data / "openkbp" / "validation" / "pt_201", device="cpu", normalise=False)


@pytest.mark.slow
def test_sensitivity_matches_finite_differences_own_mask(real_session) -> None:
    _boundary_check(real_session, "LeftParotid", "LeftParotid", "mean", "Mean[Gy]")


@pytest.mark.slow
def test_sensitivity_matches_finite_differences_target_on_oar(real_session) -> None:
    _boundary_check(real_session, "LeftParotid", "PTV70", "mean", "Mean[Gy]")


@pytest.mark.slow
@pytest.mark.parametrize("structure", ["Mandible", "Brainstem"])
def test_near_max_sensitivity_matches_finite_differences(real_session, structure: str) -> None:
    """D2% of an OAR with respect to its own mask: a 40-voxel finite-difference check (pt_201)."""
    _boundary_check(real_session, structure, structure, "D2%", "D2%[Gy]")


@pytest.mark.slow
def test_near_max_sensitivity_of_a_small_tail_holds_for_small_edits(real_session) -> None:
    """The cord's D2% is its 6 hottest voxels: 5 added voxels follow the derivative (40 saturate it,
    the documented limit: the quantile cannot rise past the added voxels' own dose)."""
    _boundary_check(real_session, "SpinalCord", "SpinalCord", "D2%", "D2%[Gy]", count=5)


def test_cli_sensitivity_writes_map_and_figure(phantom_session, tmp_path: Path, capsys) -> None:
    folder, session = phantom_session
    out = tmp_path / "sens"
    assert main(["sensitivity", str(folder), "--structure", "Parotid_L", "--wrt", "PTV70", "--metric", "mean",
                 "-o", str(out), "--device", "cpu"]) == 0
    written = read_volume(out / "sensitivity.nrrd")
    expected = session.sensitivity("LeftParotid", "mean", "PTV70")
    assert written.same_grid(session.case.ct)
    np.testing.assert_allclose(written.array, expected, atol=1e-4 * np.abs(expected).max())
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["sensitivity", str(folder), "--structure", "Nope", "-o", str(tmp_path / "bad"),
                 "--device", "cpu"]) == 1
    assert "no structure 'Nope'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_ct_stored_with_reversed_axes_gives_the_same_physical_dose(phantom_session, tmp_path: Path) -> None:
    """The session, like predict-dose, shows the network one canonical voxel order: no mirrored prediction."""
    import SimpleITK as sitk

    from DoseSegLib import WhatIfSession, align_case, read_patient, write_patient
    from DoseSegLib.core.volume import Volume

    folder, _ = phantom_session
    case = align_case(read_patient(folder))

    def reversed_axes(volume: Volume | None) -> Volume | None:
        if volume is None:
            return None
        moved = Volume.from_sitk(sitk.Flip(sitk.PermuteAxes(volume.to_sitk(), [1, 0, 2]), [True, False, True]))
        return moved.with_array(moved.array.astype(volume.array.dtype))

    from dataclasses import replace

    flipped = replace(case, ct=reversed_axes(case.ct), dose=reversed_axes(case.dose),
                      possible_dose_mask=reversed_axes(case.possible_dose_mask),
                      structures={n: reversed_axes(m) for n, m in case.structures.items()}, fine_structures={})
    (tmp_path / "flipped").mkdir()
    write_patient(tmp_path / "flipped", flipped)
    expected = WhatIfSession(folder, device="cpu").predict().dose  # a fresh session: the fixture's has edits
    got = WhatIfSession(tmp_path / "flipped", device="cpu").predict().dose
    back = reversed_axes(expected)
    assert not got.same_grid(expected) and got.same_grid(back)
    assert np.abs(got.array - back.array).max() < 0.05


CT_GRID, WORKING_GRID = (64, 64, 48, 3.9, 3.9, 2.5), (32, 32, 24, 5.5, 6.5, 4.8)


@pytest.fixture(scope="module", params=[CT_GRID, WORKING_GRID], ids=["ct-grid", "working-grid"])
def refiner_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A session on a tiny dose model with a refiner (the catalogue default), on a phantom predicted on its
    own CT grid, then on one whose voxel size is outside the trained range (the working grid)."""
    from model_helpers import write_refiner_catalogue

    from DoseSegLib import WhatIfSession
    from DoseSegLib.io.phantom import write_phantom_patient

    *shape, sx, sy, sz = request.param
    folder = tmp_path_factory.mktemp("refiner")
    write_phantom_patient(folder / "phantom", shape=tuple(shape), spacing=(sx, sy, sz))
    with pytest.MonkeyPatch.context() as patch:
        (folder / "models").mkdir()
        patch.setenv("DOSESEG_MODELS", str(write_refiner_catalogue(folder / "models")))
        yield WhatIfSession(folder / "phantom", device="cpu")


def test_session_predicts_as_predict_case_dose_with_the_refiner(refiner_session) -> None:
    """One prediction path: the session's dose is predict_case_dose's (refiner included), before and after edits."""
    from dataclasses import replace

    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose

    session = refiner_session
    model = session.model
    assert model.refiner is not None
    case = session.case
    np.testing.assert_allclose(session.predict().dose.array, predict_case_dose(model, case).array, atol=1e-4)
    base = predict_case_dose(load_dose_model("base", "cpu"), case).array
    assert np.abs(session.predict_dose().array - base).max() > 0.1  # the refiner is applied
    original = dict(case.structures)
    session.set_mask("PTV70", ndimage.binary_dilation(original["PTV70"].array))
    session.set_mask("LeftParotid", ndimage.binary_erosion(original["LeftParotid"].array))
    edited = predict_case_dose(model, replace(case, structures=session.structures)).array
    got = session.predict().dose.array
    np.testing.assert_allclose(got, edited, atol=1e-4)
    assert np.abs(got - predict_case_dose(model, case).array).max() > 0.05  # the edits moved the dose
    for name, mask in original.items():
        session.set_mask(name, mask)


@pytest.mark.parametrize("refiner_session", [CT_GRID], ids=["ct-grid"], indirect=True)
def test_sensitivity_goes_through_the_refiner(refiner_session) -> None:
    """Adding 40 voxels to an OAR (an input channel equal to the mask) moves a ring's mean dose by the
    refined model's linear estimate (factor 2, sign and order), and not by the base network's alone.

    (On the CT grid: the coarse working-grid phantom has a 66-voxel parotid, 40 voxels are half its border.)"""
    from DoseSegLib.models.dose.sensitivity import Problem, mask_sensitivity

    session = refiner_session
    mask = session.structures["LeftParotid"].array
    ring = ndimage.binary_dilation(mask, iterations=4) & ~ndimage.binary_dilation(mask, iterations=1)
    session.set_mask("Ring", ring)
    grad = session.sensitivity("Ring", "mean", wrt="LeftParotid")
    masks = {n: m.array for n, m in session.work.structures.items()}
    problem = Problem("Ring", "mean", "LeftParotid", masks, session.work.ct.voxel_volume_cc)
    base_only = mask_sensitivity(_without_refiner(session.model), session.inputs, session.box, problem)
    assert np.abs(session.grid.to_ct_grid(base_only, clip=False).array - grad).max() > 0.1 * np.abs(grad).max()
    before = session.predict_dose().array[ring].mean()
    border = np.flatnonzero(ndimage.binary_dilation(mask) & ~mask & session.case.possible_dose_mask.array)
    ranked = border[np.argsort(grad.ravel()[border])]
    changes = []
    for picked in (ranked[-40:], ranked[:40]):
        edited = mask.copy().ravel()
        edited[picked] = True
        session.set_mask("LeftParotid", edited.reshape(mask.shape))
        actual = session.predict_dose().array[ring].mean() - before
        estimate = float(grad.ravel()[picked].sum())
        session.set_mask("LeftParotid", mask)
        assert np.sign(actual) == np.sign(estimate) and 0.5 <= actual / estimate <= 2.0, (actual, estimate)
        changes.append(actual)
    assert changes[0] > changes[1]


def _without_refiner(model):
    """The model without its refiner (the base network alone)."""
    from dataclasses import replace

    return replace(model, refiner=None)
