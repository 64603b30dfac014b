"""The weights shipped in Resources/Models: catalogue integrity, and accuracy on a real patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.analysis.openkbp import dvh_abs_errors
from DoseSegLib.core.alignment import align_case
from DoseSegLib.io.patient import read_patient
from DoseSegLib.models.common.catalogue import load_catalogue, load_weights, models_dir, sha256_of

CATALOGUE = load_catalogue(models_dir()) if (models_dir() / "catalogue.json").is_file() else []
TASKS = {"dose", "segmentation"}


def test_catalogue_has_a_default_model_per_task() -> None:
    assert {entry.task for entry in CATALOGUE} >= TASKS
    for task in TASKS:
        assert sum(entry.default for entry in CATALOGUE if entry.task == task) == 1


@pytest.mark.parametrize("entry", CATALOGUE, ids=[entry.name for entry in CATALOGUE])
def test_bundled_weights_match_checksum_card_and_size(entry) -> None:
    assert entry.file.is_file(), f"{entry.file} missing"
    assert sha256_of(entry.file) == entry.sha256
    assert entry.file.stat().st_size < 50e6, "bundled weights must stay small"
    card = models_dir() / entry.card
    assert card.is_file() and entry.name in card.read_text()
    checkpoint = load_weights(entry)
    assert {"state_dict", "config", "meta"} <= set(checkpoint)


@pytest.mark.slow
def test_bundled_dose_model_on_a_validation_patient(shared_data: Path) -> None:
    """Dose and DVH errors of one real validation patient, by the OpenKBP definitions, stay well
    within what the model card reports on average (3.2 / 2.2 Gy)."""
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose

    case = align_case(read_patient(shared_data / "openkbp" / "validation" / "pt_201"))
    dose = predict_case_dose(load_dose_model(device="cpu"), case)
    assert dose.same_grid(case.ct)
    reference, predicted = case.dose.array, dose.array
    mask = case.possible_dose_mask.array
    dose_error = np.abs(predicted - reference).sum() / mask.sum()
    errors = dvh_abs_errors(predicted, reference, {n: v.array for n, v in case.structures.items()},
                            case.ct.voxel_volume_cc)
    dvh_error = np.mean(list(errors.values()))
    assert dose_error < 6.0 and dvh_error < 5.0, (dose_error, dvh_error)
    assert predicted.max() == pytest.approx(reference.max(), rel=0.15)


@pytest.mark.slow
def test_identical_runs_give_identical_results(shared_data: Path) -> None:
    """Users' known pain with other tools: results that differ between identical runs."""
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose
    from DoseSegLib.models.seg.predict import load_segmentation_model, segment_case

    case = align_case(read_patient(shared_data / "openkbp" / "validation" / "pt_201"))
    doses = [predict_case_dose(load_dose_model(device="cpu"), case, tta=True).array for _ in range(2)]
    assert np.array_equal(*doses)
    model = load_segmentation_model(device="cpu")
    first, second = (segment_case(model, case) for _ in range(2))
    assert first.keys() == second.keys() and all(np.array_equal(first[n].array, second[n].array) for n in first)


@pytest.mark.slow
def test_bundled_dose_refiner_on_a_validation_patient(shared_data: Path) -> None:
    """The published refiner loads with its base (both sha256-checked), changes the base dose by a
    correction of a few Gy, and keeps the errors of a real patient within the card's range."""
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose

    case = align_case(read_patient(shared_data / "openkbp" / "validation" / "pt_201"))
    model = load_dose_model("openkbp-dose-refine24", device="cpu")
    assert model.refiner is not None and model.entry.base == "openkbp-dose-unet24"
    refined = predict_case_dose(model, case).array
    base = predict_case_dose(load_dose_model("openkbp-dose-unet24", device="cpu"), case).array
    change = np.abs(refined - base)
    assert 0.1 < change.max() < 20.0, change.max()
    mask = case.possible_dose_mask.array
    dose_error = np.abs(refined - case.dose.array).sum() / mask.sum()
    errors = dvh_abs_errors(refined, case.dose.array, {n: v.array for n, v in case.structures.items()},
                            case.ct.voxel_volume_cc)
    assert dose_error < 3.5 and np.mean(list(errors.values())) < 3.0, (dose_error, errors)
