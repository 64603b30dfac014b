"""Gamma index (Low et al. 1998) of an evaluated dose against a reference dose, with pymedphys.

Global gamma: the dose criterion is a percentage of the reference maximum inside the body;
reference points below ``LOW_DOSE_CUTOFF_PCT`` of it, or outside the body, are not evaluated.
In ``doseseg run`` a seeded random sample of at most ``MAX_POINTS`` reference points is
evaluated (the pass rate's standard error is then at most 0.7 %), with pymedphys' search
stopped at ``MAX_GAMMA``: the pass rate is exact for the sampled points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume, mask_box

CRITERIA = ((3.0, 3.0), (2.0, 2.0))
LOW_DOSE_CUTOFF_PCT = 10.0
MAX_POINTS = 5000
MAX_GAMMA = 1.1
INTERP_FRACTION = 5
GAMMA_COLUMNS = (
    "criterion", "dose_pct", "distance_mm", "pass_rate_pct", "evaluated_cc", "failed_cc", "points",
    "points_evaluated", "low_dose_cutoff_pct", "normalisation_gy",
)


@dataclass(frozen=True)
class GammaResult:
    """One criterion's outcome.

    Attributes:
        dose_pct: dose criterion, % of ``normalisation_gy`` (global).
        distance_mm: distance-to-agreement criterion.
        pass_rate_pct: % of the evaluated reference points with gamma <= 1.
        evaluated_cc: volume of the reference points eligible (in the body, above the cut-off).
        failed_cc: that volume times the failing fraction.
        points: eligible reference points; ``points_evaluated`` of them were (a random sample when fewer).
        normalisation_gy: the reference maximum in the body.
    """

    dose_pct: float
    distance_mm: float
    pass_rate_pct: float
    evaluated_cc: float
    failed_cc: float
    points: int
    points_evaluated: int
    normalisation_gy: float

    def row(self) -> dict[str, object]:
        """One line of ``gamma.csv``."""
        return {
            "criterion": f"{self.dose_pct:g}%/{self.distance_mm:g}mm", "dose_pct": self.dose_pct,
            "distance_mm": self.distance_mm, "pass_rate_pct": self.pass_rate_pct,
            "evaluated_cc": self.evaluated_cc, "failed_cc": self.failed_cc, "points": self.points,
            "points_evaluated": self.points_evaluated, "low_dose_cutoff_pct": LOW_DOSE_CUTOFF_PCT,
            "normalisation_gy": self.normalisation_gy,
        }


def _cropped_axes(volume: Volume, box: tuple[slice, ...]) -> tuple[np.ndarray, ...]:
    """Coordinates (mm, along the grid axes) of the box's voxel centres."""
    return tuple(s * np.arange(b.start, b.stop, dtype=np.float64) for s, b in zip(volume.spacing, box, strict=True))


def gamma_pass_rates(
    reference: Volume,
    evaluated: Volume,
    body: Volume | None = None,
    criteria: Sequence[tuple[float, float]] = CRITERIA,
    max_points: int | None = MAX_POINTS,
    seed: int = 0,
) -> list[GammaResult]:
    """Global gamma pass rates of ``evaluated`` against ``reference`` (both on one grid, Gy).

    Args:
        reference: reference dose; its grid is where gamma is evaluated.
        evaluated: the dose under test, on the same grid.
        body: where reference points are evaluated (the whole grid when None).
        criteria: (dose %, distance mm) pairs.
        max_points: evaluate a seeded random sample of at most this many reference points;
            None evaluates every eligible point (slow on large grids).
        seed: the sample's random seed.
    """
    try:
        import pymedphys
    except ImportError:
        raise DoseSegError("the gamma index needs pymedphys: pip install pymedphys==0.41.0") from None
    if not evaluated.same_grid(reference):
        raise DoseSegError("gamma: the evaluated dose is not on the reference dose grid")
    margins = [int(np.ceil(MAX_GAMMA * distance / min(reference.spacing))) + 1 for _, distance in criteria]
    whole = tuple(slice(0, n) for n in reference.shape)
    region = mask_box(body.array, max(margins)) if body is not None and body.array.any() else whole
    inside = body.array[region].astype(bool) if body is not None else np.ones(reference.shape, dtype=bool)
    ref = reference.array[region].astype(np.float64)  # the body's box (and search margin) only
    normalisation = float(ref[inside].max()) if inside.any() else 0.0
    eligible = inside & (ref >= LOW_DOSE_CUTOFF_PCT / 100 * normalisation)
    if normalisation <= 0 or not eligible.any():
        raise DoseSegError("gamma: the reference dose is zero inside the body")
    points = np.flatnonzero(eligible)
    chosen: np.ndarray = points
    if max_points is not None and points.size > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(points, max_points, replace=False))
    selected: np.ndarray = np.zeros(ref.size, dtype=bool)
    selected[chosen] = True
    selected = selected.reshape(ref.shape)
    results = []
    for (dose_pct, distance_mm), margin in zip(criteria, margins, strict=True):
        box = mask_box(selected, margin)
        masked = np.where(selected[box], ref[box], np.nan)  # pymedphys skips NaN reference points
        crop = tuple(slice(b.start + r.start, b.stop + r.start) for b, r in zip(box, region, strict=True))
        axes = _cropped_axes(reference, crop)
        gamma = pymedphys.gamma(
            axes, masked, axes, evaluated.array[region][box].astype(np.float64), dose_pct, distance_mm,
            lower_percent_dose_cutoff=LOW_DOSE_CUTOFF_PCT, interp_fraction=INTERP_FRACTION, max_gamma=MAX_GAMMA,
            global_normalisation=normalisation, skip_once_passed=True, interp_algo="scipy",
        )
        values = gamma[selected[box]]
        passed = float(np.mean(np.nan_to_num(values, nan=np.inf) <= 1))
        volume = points.size * reference.voxel_volume_cc
        results.append(GammaResult(dose_pct, distance_mm, 100 * passed, volume, (1 - passed) * volume,
                                   int(points.size), int(chosen.size), normalisation))
    return results
