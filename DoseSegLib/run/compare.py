"""The predicted dose against the patient's reference dose: scores, metric differences, gamma."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

import numpy as np

from DoseSegLib.analysis.constraints import Constraint
from DoseSegLib.analysis.plan import PlanEvaluation, evaluate_plan
from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume
from DoseSegLib.run.results import Comparison


def gamma_rows(dose: Volume, case: Case, native_reference: Volume | None = None) -> list[dict]:
    """Gamma pass rates of the predicted ``dose`` (CT grid) against the reference dose.

    The reference points are those of the reference dose's own grid (``native_reference``, as
    the planning system computed it) when given; the predicted dose and the possible-dose mask are
    brought onto it. Otherwise, and for a reference already on the CT grid, the CT grid's points.
    """
    from DoseSegLib.analysis.gamma import gamma_pass_rates
    from DoseSegLib.core.alignment import resample, resample_mask

    if native_reference is None or native_reference.same_grid(dose):
        return [r.row() for r in gamma_pass_rates(case.require_dose(), dose, case.possible_dose_mask)]
    evaluated = resample(dose, native_reference, "linear", 0.0)
    body = resample_mask(case.require_possible_dose_mask(), native_reference)
    return [r.row() for r in gamma_pass_rates(native_reference, evaluated, body)]


def compare_doses(
    dose: Volume, case: Case, constraints: Sequence[Constraint] | None = None,
    predicted: PlanEvaluation | None = None, native_reference: Volume | None = None,
    not_covered: Collection[str] = (),
) -> Comparison:
    """Predicted ``dose`` against the aligned ``case``'s reference dose, on the CT grid.

    Args:
        dose: predicted dose (Gy) on the CT grid.
        case: aligned case whose ``dose`` is the reference.
        constraints: clinical goals checked on the reference too (DoseSegLib's table when None).
        predicted: the predicted dose's evaluation when already computed.
        native_reference: the reference dose on its own grid (before alignment), where gamma is
            evaluated (see :func:`gamma_rows`).
        not_covered: structures the reference dose's grid leaves partly out (their reference dose is 0 Gy there):
            left out of the DVH error, dvh_errors.csv and comparison.csv, listed in ``Comparison.not_covered``.
    """
    from DoseSegLib.analysis.evaluation import score_patient

    predicted = predicted or evaluate_plan(replace(case, dose=dose), constraints=constraints)
    reference = evaluate_plan(case, constraints=constraints, dvh_method=predicted.method)
    left_out = [name for name in case.structures if name in not_covered]
    scored = replace(case, structures={n: m for n, m in case.structures.items() if n not in left_out})
    score = score_patient(dose, scored, (predicted.doses, reference.doses))  # as doseseg evaluate scores it
    differences = [
        {"structure": p["structure"], "metric": key, "reference": r[key], "predicted": value,
         "difference": value - r[key]}
        for p, r in zip(predicted.metrics, reference.metrics, strict=True)
        if p["structure"] not in left_out
        for key, value in p.items()
        if key not in ("structure", "prescription_gy") and isinstance(value, float) and key in r
    ]
    reference_dose = case.require_dose()
    difference = dose.with_array(np.subtract(dose.array, reference_dose.array, dtype=np.float32))
    return Comparison(reference_dose, difference, score.dose_error, score.dvh_error, score.dvh_rows, differences,
                      reference, gamma_rows(dose, case, native_reference), left_out)
