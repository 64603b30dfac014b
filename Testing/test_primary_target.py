"""The primary target (normalisation, intervals, report): the highest-dose PTV, never a CTV or a small boost."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from DoseSegLib.analysis.normalisation import Convention, normalisation_text, normalise_dose, target_metric
from DoseSegLib.analysis.sampling import structure_doses
from DoseSegLib.core.case import Case, chosen_target, is_ptv, primary_prescription, primary_target
from DoseSegLib.core.volume import Volume


def _with(case: Case, first: dict[str, Volume], prescriptions: dict[str, float]) -> Case:
    """``case`` with ``first`` listed before its own structures (the order a reader would give)."""
    return replace(case, structures={**first, **case.structures}, prescriptions=prescriptions)


def _eroded(case: Case, name: str, iterations: int) -> Volume:
    mask = case.structures[name]
    return mask.with_array(binary_erosion(mask.array.astype(bool), iterations=iterations))


def _mean(dose: Volume, case: Case, name: str) -> float:
    return target_metric(structure_doses(dose, name, case.structures[name]).doses, "mean")


def test_a_ctv_sharing_the_top_prescription_does_not_decide_the_normalisation(phantom_case: Case) -> None:
    ctv = _eroded(phantom_case, "PTV70", 2)
    rim = phantom_case.structures["PTV70"].array & ~ctv.array
    dose = phantom_case.dose.with_array(phantom_case.dose.array - np.float32(6.0) * rim)  # cooler PTV margin
    case = _with(replace(phantom_case, dose=dose), {"CTV_70": ctv}, {"CTV_70": 70.0})
    assert next(iter(case.targets)) == "CTV_70"  # listed first: the old choice
    assert _mean(dose, case, "CTV_70") > _mean(dose, case, "PTV70") + 1.0  # they differ here
    scaled, done = normalise_dose(dose, case, Convention("mean", 1.02))
    assert done.structure == "PTV70" and _mean(scaled, case, "PTV70") == pytest.approx(1.02 * 70, rel=1e-4)
    assert done.why == "the PTV among CTV_70, PTV70 at 70 Gy"
    assert "PTV70 (the PTV among CTV_70, PTV70 at 70 Gy)" in normalisation_text(done.to_dict())


def test_a_small_higher_dose_boost_that_is_not_a_ptv_is_not_the_primary_target(phantom_case: Case) -> None:
    centre = np.zeros(phantom_case.ct.shape, bool)
    index = np.argwhere(phantom_case.structures["PTV70"].array)[0]
    centre[tuple(index)] = centre[index[0] + 1, index[1], index[2]] = True  # a 2-voxel GTV
    case = _with(phantom_case, {"GTV": phantom_case.ct.with_array(centre)}, {"GTV": 74.0})
    primary = primary_target(case)
    assert primary is not None and (primary.name, primary.prescription) == ("PTV70", 70.0)
    assert primary.why == "the highest-dose PTV at 70 Gy; GTV 74 Gy is not a PTV"
    assert case.main_prescription == 70.0
    assert normalise_dose(case.dose, case, Convention("mean", 1.02))[1].structure == "PTV70"


def test_ties_go_to_the_largest_ptv_and_without_a_ptv_to_the_largest_target(phantom_case: Case) -> None:
    small = _eroded(phantom_case, "PTV70", 3)
    case = _with(phantom_case, {"PTV_Boost": small}, {"PTV_Boost": 70.0})
    assert primary_target(case).name == "PTV70"  # type: ignore[union-attr]
    assert "largest PTV among PTV_Boost, PTV70" in primary_target(case).why  # type: ignore[union-attr]
    no_ptv = {("CTV_A" if n == "PTV70" else n): m for n, m in phantom_case.structures.items() if n != "PTV56"}
    case = replace(phantom_case, structures={"CTV_B": small, **no_ptv}, prescriptions={"CTV_A": 70.0, "CTV_B": 70.0})
    chosen = primary_target(case)
    assert chosen is not None and chosen.name == "CTV_A" and "largest target" in chosen.why
    alone = primary_target(phantom_case)
    assert alone is not None and (alone.name, alone.why) == ("PTV70", "")
    assert primary_target(replace(phantom_case, structures={})) is None


def test_a_ptv_is_a_name_starting_with_ptv_for_targets_and_the_primary_target_alike(phantom_case: Case) -> None:
    """zPTV_ring (an optimisation helper) contains PTV but is not one: prescribed 74 Gy, it is a target (its dose
    is known) but neither the primary target nor the prescription the report and the Slicer isodose use."""
    assert [is_ptv(n) for n in ("PTV70", "ptv low", "PTV_High", "zPTV_ring", "CTV_PTV70", "GTV")] == [
        True, True, True, False, False, False]
    ring = _eroded(phantom_case, "PTV56", 1)
    case = _with(phantom_case, {"zPTV_ring": ring}, {"zPTV_ring": 74.0})
    assert "zPTV_ring" in case.targets
    primary = primary_target(case)
    assert primary is not None and (primary.name, primary.prescription) == ("PTV70", 70.0)
    assert primary.why == "the highest-dose PTV at 70 Gy; zPTV_ring 74 Gy is not a PTV"
    assert case.main_prescription == 70.0 == primary_prescription(case.targets)
    assert primary_prescription({"GTV": 74.0, "PTV70": 70.0}) == 70.0  # what the Slicer module is given
    assert primary_prescription({"GTV": 74.0, "CTV": 60.0}) == 74.0 and primary_prescription({}) is None


def test_the_report_and_the_console_line_name_the_chosen_target_alike(phantom_case: Case) -> None:
    """One text (chosen_target) for the primary target and why, in the report and normalisation_text."""
    from types import SimpleNamespace

    from DoseSegLib.run.report import _trust_section

    case = _with(phantom_case, {"CTV_70": _eroded(phantom_case, "PTV70", 2)}, {"CTV_70": 70.0})
    done = normalise_dose(case.require_dose(), case, Convention("mean", 1.02))[1]
    said = chosen_target(done.structure, done.why)
    assert said == "PTV70 (the PTV among CTV_70, PTV70 at 70 Gy)" and chosen_target("PTV70") == "PTV70"
    assert normalisation_text(done.to_dict()).startswith(f"normalised: {said} mean ")
    report = _trust_section(SimpleNamespace(applicability=None, normalisation=done, all_warnings=[]))  # type: ignore[arg-type]
    assert f"Normalised to the prescription: {said} mean " in report
