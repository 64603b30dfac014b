"""Gamma index through pymedphys: a dose against itself, a known dose scaling and a known shift."""

from __future__ import annotations

import numpy as np
import pytest

from DoseSegLib.analysis.gamma import gamma_pass_rates
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume

SPACING = (2.0, 2.0, 2.0)


def gaussian_dose(shift_mm: float = 0.0, scale: float = 1.0) -> Volume:
    """A 60 Gy Gaussian dose cloud (sigma 12 mm) on a 2 mm grid, shifted along i by ``shift_mm``."""
    i, j, k = np.meshgrid(*(2.0 * np.arange(n) for n in (40, 30, 30)), indexing="ij")
    r2 = (i - 40 - shift_mm) ** 2 + (j - 30) ** 2 + (k - 30) ** 2
    return Volume((scale * 60 * np.exp(-r2 / (2 * 12.0**2))).astype(np.float32), SPACING, (0.0, 0.0, 0.0))


def test_dose_against_itself_passes_everywhere() -> None:
    dose = gaussian_dose()
    for result in gamma_pass_rates(dose, dose):
        assert result.pass_rate_pct == 100.0 and result.failed_cc == 0.0
        # every voxel at or above 10 % of 60 Gy is evaluated
        assert result.points == np.count_nonzero(dose.array >= 6.0)
        assert result.evaluated_cc == pytest.approx(result.points * 0.008)


def test_known_scaling_and_shift() -> None:
    """+2.5 % (at most 1.5 Gy, 2.5 % of the maximum) passes 3 %/3 mm everywhere; shifts pass or fail by distance."""
    reference = gaussian_dose()
    scaled = {r.dose_pct: r.pass_rate_pct for r in gamma_pass_rates(reference, gaussian_dose(scale=1.025))}
    assert scaled[3.0] == 100.0
    # A 2 mm shift is within 3 mm and 2 mm distance-to-agreement: everything passes both.
    assert all(r.pass_rate_pct == 100.0 for r in gamma_pass_rates(reference, gaussian_dose(shift_mm=2.0)))
    # A 4 mm shift: some points fail, more at 2 %/2 mm; the sample's pass rate agrees with the exhaustive
    # computation within four standard errors.
    shifted = gaussian_dose(shift_mm=4.0)
    full = {r.dose_pct: r.pass_rate_pct for r in gamma_pass_rates(reference, shifted, max_points=None)}
    sampled = {r.dose_pct: r for r in gamma_pass_rates(reference, shifted, max_points=2000)}
    assert 0 < full[2.0] < full[3.0] < 100
    for dose_pct, rate in full.items():
        assert sampled[dose_pct].points_evaluated == 2000
        assert sampled[dose_pct].pass_rate_pct == pytest.approx(rate, abs=4 * np.sqrt(rate * (100 - rate) / 2000))


def test_pointwise_against_a_hand_computed_gamma() -> None:
    """A uniform 1 % dose difference in a flat region: gamma = 1/3 at 3 %/3 mm, so all pass; 1.5 x 2 % fails."""
    flat = Volume(np.full((12, 12, 12), 50.0, dtype=np.float32), SPACING, (0.0, 0.0, 0.0))
    body = flat.with_array(np.zeros(flat.shape, bool))
    body.array[3:9, 3:9, 3:9] = True
    (three, two) = gamma_pass_rates(flat, flat.with_array(flat.array * 1.01), body)
    assert three.pass_rate_pct == two.pass_rate_pct == 100.0 and three.points == 216
    (three, two) = gamma_pass_rates(flat, flat.with_array(flat.array * 1.03), body)
    assert three.pass_rate_pct == 100.0 and two.pass_rate_pct == 0.0 and two.failed_cc == pytest.approx(216 * 0.008)


def test_gamma_refuses_other_grids_and_empty_dose() -> None:
    dose = gaussian_dose()
    with pytest.raises(DoseSegError, match="not on the reference dose grid"):
        gamma_pass_rates(dose, Volume(dose.array, (2.5, 2.0, 2.0), (0.0, 0.0, 0.0)))
    with pytest.raises(DoseSegError, match="zero inside the body"):
        gamma_pass_rates(dose.with_array(np.zeros(dose.shape, np.float32)), dose)
