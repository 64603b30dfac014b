"""A clinical-size CT (1.1 x 1.1 x 1.25 mm) gives doses and contours as good as the OpenKBP original.

The fine copy is built as ``benchmarks/bench_clinical.py`` builds its own (``clinical_copy``), over the
body's box only: structures, possible-dose mask and dose on grids of their own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clinical_copy import body_box_grid, clinical_copy

from DoseSegLib.analysis.openkbp import dose_error
from DoseSegLib.analysis.segmetrics import dice
from DoseSegLib.core.alignment import align_case, resample, resample_mask
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.io.patient import read_patient

pytestmark = pytest.mark.slow
PATIENT = Path("openkbp") / "validation" / "pt_201"


@pytest.fixture(scope="module")
def original_and_fine(shared_data: Path) -> tuple[Case, Case]:
    """The aligned OpenKBP patient (128^3 at 5.4 x 5.4 x 3 mm) and its aligned clinical-size copy."""
    raw = read_patient(shared_data / PATIENT)
    return align_case(raw), align_case(clinical_copy(raw, body_box_grid(raw.ct)))


def _error(dose: np.ndarray, case: Case) -> float:
    return dose_error(dose, case.dose.array, case.possible_dose_mask.array)


def test_fine_ct_dose_is_as_good_as_on_the_original(original_and_fine: tuple[Case, Case]) -> None:
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose

    original, fine = original_and_fine
    assert fine.ct.spacing == (1.1, 1.1, 1.25)
    model = load_dose_model("openkbp-dose-unet24", device="cpu")
    reference = _error(predict_case_dose(model, original).array, original)
    predicted = predict_case_dose(model, fine)
    # the same reference over the same possible-dose mask: the fine prediction on the original grid
    on_original = _error(resample(predicted, original.ct, "linear", 0.0).array, original)
    assert abs(on_original - reference) <= 0.1, (on_original, reference)
    # as `doseseg run` reports it, against the copy's reference dose interpolated onto the fine CT
    assert _error(predicted.array, fine) <= reference + 0.1, (_error(predicted.array, fine), reference)


def test_fine_ct_contours_are_as_good_as_on_the_original(original_and_fine: tuple[Case, Case]) -> None:
    from DoseSegLib.models.seg.predict import load_segmentation_model, segment_case

    original, fine = original_and_fine
    model = load_segmentation_model("openkbp-oar-seg24", device="cpu")
    on_original, on_fine = segment_case(model, original), segment_case(model, fine)
    organs = [name for name in OARS if name in original.structures]
    reference = np.mean([dice(on_original[name], original.structures[name]) for name in organs])
    # Dice on the original 128^3 grid: the fine contours brought back there
    fine_dice = np.mean([dice(resample_mask(on_fine[name], original.ct), original.structures[name])
                         for name in organs])
    assert fine_dice >= reference - 0.01, (fine_dice, reference)
