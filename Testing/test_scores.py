"""OpenKBP dose and DVH scores, as the challenge defines them."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np
import pytest
from openkbp_reference import challenge_metrics, on_ct_grid

from DoseSegLib.analysis.openkbp import dose_error, dvh_abs_errors, dvh_comparison, openkbp_metrics, openkbp_scores

VOXEL_CC = 0.04  # 0.1 cc = 2.5 voxels -> round() gives 2 voxels


def synthetic_patient(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    dose = rng.uniform(0, 70, (20, 20, 20))
    structures = {name: np.zeros(dose.shape, dtype=bool) for name in ("PTV70", "Brainstem", "Body", "Larynx")}
    structures["PTV70"][5:10, 5:10, 5:10] = True
    structures["Brainstem"][12:18, 2:6, 2:9] = True
    structures["Body"][:] = True
    mask = np.zeros(dose.shape, dtype=bool)
    mask[2:18, 2:18, 2:18] = True
    return dose, structures, mask




def test_dose_error_sums_everywhere_divides_by_mask() -> None:
    ref = np.zeros((4, 4, 4))
    pred = ref.copy()
    pred[0, 0, 0] = 3.0  # outside the mask: still counted in the sum
    pred[1, 1, 1] = -1.0
    mask = np.zeros(ref.shape, dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    assert dose_error(pred, ref, mask) == pytest.approx(4.0 / 8)


def test_dose_error_leaves_out_reference_dose_past_the_mask() -> None:
    """A clinical reference dose reaching past the possible-dose mask (into air, or interpolated from a
    coarser grid past the mask's edge) is not held against a prediction masked to it."""
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    ref = np.zeros(mask.shape)
    ref[:3, :3, :3] = 5.0  # 5 Gy in the mask and in part of the air around it
    pred = np.where(mask, 10.0, 0.0)
    assert dose_error(pred, ref, mask) == pytest.approx(5.0)  # |10 - 5| in the mask only
    pred[3, 3, 3] = 2.0  # predicted where the reference has none: counted, as in the challenge
    assert dose_error(pred, ref, mask) == pytest.approx(5.0 + 2.0 / 8)
    assert dose_error(ref, ref, mask) == 0.0


def test_metrics_follow_the_challenge_formulas() -> None:
    dose, structures, _ = synthetic_patient(0)
    metrics = openkbp_metrics(dose, structures, VOXEL_CC)
    expected = challenge_metrics(dose, structures, VOXEL_CC * 1000)
    assert set(metrics) == set(expected)  # Body is neither an OAR nor a target; empty Larynx left out
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key


def test_comparison_rows_and_abs_errors() -> None:
    dose, structures, _ = synthetic_patient(1)
    pred = dose * 1.1
    rows = dvh_comparison(pred, dose, structures, VOXEL_CC)
    assert [(r["structure"], r["metric"]) for r in rows] == [
        ("PTV70", "D99%[Gy]"), ("PTV70", "D95%[Gy]"), ("PTV70", "D1%[Gy]"), ("Brainstem", "D0.1cc[Gy]"),
        ("Brainstem", "Mean[Gy]"),
    ]
    for row in rows:
        assert row["predicted"] == pytest.approx(1.1 * row["reference"])
        assert row["abs_error"] == pytest.approx(0.1 * row["reference"])
    errors = dvh_abs_errors(pred, dose, structures, VOXEL_CC)
    assert errors == {(r["structure"], r["metric"]): r["abs_error"] for r in rows}


def test_scores_pool_dvh_errors_over_patients() -> None:
    """DVH score is the mean over all metrics of all patients, not a mean of patient means."""
    dvh_errors = [{("A", "mean"): 1.0, ("A", "D0.1cc"): 1.0}, {("B", m): 4.0 for m in ("D99", "D95", "D1", "x")}]
    dose_score, dvh_score = openkbp_scores([1.0, 2.0], dvh_errors)
    assert dose_score == 1.5
    assert dvh_score == pytest.approx(18 / 6)


def test_identical_doses_score_zero() -> None:
    dose, structures, mask = synthetic_patient(2)
    errors = dvh_abs_errors(dose, dose, structures, VOXEL_CC)
    assert openkbp_scores([dose_error(dose, dose, mask)], [errors]) == (0.0, 0.0)




def test_real_patient_metrics_match_the_challenge(shared_data: Path) -> None:
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.patient import read_patient

    folder = shared_data / "openkbp" / "validation" / "pt_206"
    _, ct_header = nrrd.read(str(folder / "ct.nrrd"))
    spacing = np.diag(ct_header["space directions"])
    origin = np.asarray(ct_header["space origin"])
    dose = on_ct_grid(folder / "dose.nrrd", origin, spacing)
    structures = {p.stem: on_ct_grid(p, origin, spacing) > 0 for p in (folder / "structures").glob("*.nrrd")}
    expected = challenge_metrics(dose, structures, float(np.prod(spacing)))

    case = align_case(read_patient(folder))
    masks = {name: mask.array for name, mask in case.structures.items()}
    metrics = openkbp_metrics(case.dose.array, masks, case.ct.voxel_volume_cc)
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
