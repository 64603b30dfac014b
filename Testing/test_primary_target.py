"""The primary target (normalisation, intervals, report): the highest prescription among the targets of at least
1 cc, a PTV on ties: never a CTV sharing a PTV's prescription or a small boost, but a CTV70 above a PTV56."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from DoseSegLib.analysis.normalisation import Convention, normalisation_text, normalise_dose, target_metric
from DoseSegLib.analysis.sampling import structure_doses
from DoseSegLib.core.case import (
    MIN_PRIMARY_CC,
    Case,
    chosen_target,
    is_ptv,
    primary_prescription,
    primary_target,
)
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
    assert primary.why == "GTV 0.08 cc too small to set the normalisation"  # 2 voxels of 0.04 cc
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


def test_a_ptv_is_a_name_starting_with_ptv_and_a_large_higher_target_sets_the_normalisation(phantom_case: Case) -> None:
    """zPTV_ring (an optimisation helper) contains PTV but is not one. Prescribed 74 Gy and larger than 1 cc, it has
    the highest prescription of the large targets: under the size rule it is the primary target (a PTV only wins
    ties). The Slicer panel, which knows no volumes, keeps the highest PTV's prescription."""
    assert [is_ptv(n) for n in ("PTV70", "ptv low", "PTV_High", "zPTV_ring", "CTV_PTV70", "GTV")] == [
        True, True, True, False, False, False]
    ring = _eroded(phantom_case, "PTV56", 1)
    case = _with(phantom_case, {"zPTV_ring": ring}, {"zPTV_ring": 74.0})
    assert "zPTV_ring" in case.targets
    primary = primary_target(case)
    assert primary is not None and (primary.name, primary.prescription) == ("zPTV_ring", 74.0)
    assert primary.why == "zPTV_ring: no PTV carries 74 Gy"
    assert case.main_prescription == 74.0
    assert primary_prescription(case.targets) == 70.0  # without volumes: the highest PTV's
    assert primary_prescription({"GTV": 74.0, "PTV70": 70.0}) == 70.0  # what the Slicer module is given
    assert primary_prescription({"GTV": 74.0, "CTV": 60.0}) == 74.0 and primary_prescription({}) is None


def test_the_size_rule_with_volumes() -> None:
    """Candidates: the targets of at least MIN_PRIMARY_CC (all when none is); the highest prescription wins."""
    assert MIN_PRIMARY_CC == 1.0
    assert primary_prescription({"GTV": 74.0, "PTV70": 70.0}, {"GTV": 0.08, "PTV70": 300.0}) == 70.0
    assert primary_prescription({"GTV": 74.0, "PTV70": 70.0}, {"GTV": 1.0, "PTV70": 300.0}) == 74.0
    assert primary_prescription({"GTV": 74.0, "PTV70": 70.0}, {"GTV": 0.08, "PTV70": 0.5}) == 74.0  # none large
    assert primary_prescription({"CTV70": 70.0, "PTV56": 56.0}, {"CTV70": 150.0, "PTV56": 600.0}) == 70.0
    assert primary_prescription({}, {}) is None


def test_a_ctv_prescribed_above_every_ptv_sets_the_normalisation(phantom_case: Case) -> None:
    """An RTPLAN prescribing CTV70 at 70 Gy and PTV56 at 56 Gy (no PTV at 70): the elective PTV56 must not set the
    normalisation (it scaled CTV70's mean to 66.5 Gy instead of 71.5, -7 %)."""
    structures = {("CTV70" if n == "PTV70" else n): m for n, m in phantom_case.structures.items()}
    case = replace(phantom_case, structures=structures, prescriptions={"CTV70": 70.0, "PTV56": 56.0})
    primary = primary_target(case)
    assert primary is not None and (primary.name, primary.prescription) == ("CTV70", 70.0)
    assert primary.why == "CTV70: no PTV carries 70 Gy" and case.main_prescription == 70.0
    scaled, done = normalise_dose(case.require_dose(), case, Convention("mean", 1.02))
    assert done.structure == "CTV70" and _mean(scaled, case, "CTV70") == pytest.approx(1.02 * 70, rel=1e-4)


def test_a_one_voxel_ptv_at_the_skin_does_not_set_the_normalisation(phantom_case: Case) -> None:
    sliver = np.zeros(phantom_case.ct.shape, bool)
    sliver[0, 0, 0] = True
    case = _with(phantom_case, {"PTV74": phantom_case.ct.with_array(sliver)}, {})
    primary = primary_target(case)
    assert primary is not None and (primary.name, primary.prescription) == ("PTV70", 70.0)
    assert primary.why == "PTV74 0.04 cc too small to set the normalisation"
    alone = replace(phantom_case, structures={"PTV74": phantom_case.ct.with_array(sliver)})
    assert primary_target(alone).name == "PTV74"  # type: ignore[union-attr]  # no target is 1 cc: all compete


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
