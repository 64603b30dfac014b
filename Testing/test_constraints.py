"""Clinical DVH goals: the shipped table, pass/fail, per-PTV prescriptions, absent structures, user CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from DoseSegLib.analysis.constraints import Constraint, evaluate_constraints, load_constraints, v_doses
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume


def by_key(results: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["structure"], r["metric"]): r for r in results}


def test_default_table_has_the_head_and_neck_goals() -> None:
    goals = {(c.structure, c.metric): c for c in load_constraints()}
    assert goals[("LeftParotid", "Dmean")].value == goals[("RightParotid", "Dmean")].value == 26
    assert (goals[("SpinalCord", "D0.1cc")].operator, goals[("SpinalCord", "D0.1cc")].value) == ("<", 45)
    assert goals[("Brainstem", "D0.1cc")].value == 54
    assert goals[("Mandible", "D0.1cc")].value == 73.5
    ptv = goals[("PTV*", "D95")]
    assert (ptv.operator, ptv.value, ptv.unit) == (">=", 95, "pct_rx")


def test_pass_fail_and_own_prescriptions() -> None:
    rows = [
        {"structure": "LeftParotid", "Dmean": 24.0},
        {"structure": "RightParotid", "Dmean": 31.0},
        {"structure": "SpinalCord", "D0.1cc": 45.0},  # not < 45
        {"structure": "PTV70", "D95": 66.6},  # >= 66.5
        {"structure": "PTV56", "D95": 53.0},  # < 53.2
    ]
    results = by_key(evaluate_constraints(rows, load_constraints(), prescription=70.0))
    assert results[("LeftParotid", "Dmean")]["result"] == "pass"
    assert results[("RightParotid", "Dmean")]["result"] == "fail"
    assert results[("SpinalCord", "D0.1cc")]["result"] == "fail"
    assert results[("PTV70", "D95")]["result"] == "pass"
    assert results[("PTV70", "D95")]["limit"] == pytest.approx(66.5)
    assert results[("PTV56", "D95")]["limit"] == pytest.approx(53.2)
    assert results[("PTV56", "D95")]["result"] == "fail"
    for absent in ("Brainstem", "Mandible"):
        assert results[(absent, "D0.1cc")]["result"] == "not evaluated"
        assert "not in this patient" in results[(absent, "D0.1cc")]["detail"]


def test_pct_rx_without_a_prescription_is_not_evaluated() -> None:
    goal = Constraint("CTV", "D95", ">=", 95, "pct_rx")
    (result,) = evaluate_constraints([{"structure": "CTV", "D95": 60.0}], [goal])
    assert result["result"] == "not evaluated"
    (result,) = evaluate_constraints([{"structure": "CTV", "D95": 60.0}], [goal], prescription=60.0)
    assert result["result"] == "pass" and result["limit"] == pytest.approx(57.0)
    (result,) = evaluate_constraints([{"structure": "CTV", "D95": 60.0}], [goal], prescription={"CTV": 66.0})
    assert result["result"] == "fail"


def test_user_csv_with_volume_goals(tmp_path: Path) -> None:
    path = tmp_path / "goals.csv"
    path.write_text(
        "structure,metric,operator,value,unit\n"
        "# comment rows are skipped,,,,\n"
        "Larynx,V50Gy,<=,30,pct\n"
        "Larynx,V60Gy,<,2,cc\n"
    )
    goals = load_constraints(path)
    assert v_doses(goals) == [50.0, 60.0]
    rows = [{"structure": "Larynx", "V50Gy_pct": 25.0, "V50Gy_cc": 5.0, "V60Gy_pct": 10.0, "V60Gy_cc": 2.0}]
    results = evaluate_constraints(rows, goals)
    assert [(r["result"], r["limit_unit"]) for r in results] == [("pass", "pct"), ("fail", "cc")]
    (missing,) = evaluate_constraints([{"structure": "Larynx"}], goals[:1])
    assert missing["result"] == "not evaluated" and "not computed" in missing["detail"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("Cord,Dmax,=<,45,Gy", "operator"),
        ("Cord,Dmax,<,45,cGy", "unit"),
        ("Cord,V20Gy,<,45,Gy", "unit"),
        ("Cord,Dhigh,<,45,Gy", "unknown metric"),
        ("Cord,Dmax,<,lots,Gy", "not a number"),
    ],
)
def test_bad_user_csv_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "goals.csv"
    path.write_text("structure,metric,operator,value,unit\nBrainstem,Dmax,<,54,Gy\n" + line + "\n")
    with pytest.raises(DoseSegError, match=f"line 3: .*{message}"):
        load_constraints(path)


def test_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "goals.csv"
    path.write_text("structure,metric,value\nBrainstem,Dmax,54\n")
    with pytest.raises(DoseSegError, match="operator, unit"):
        load_constraints(path)


def test_evaluate_plan_on_a_synthetic_case() -> None:
    shape = (30, 30, 30)
    i = np.indices(shape)[0]
    grid = Volume(np.zeros(shape, dtype=np.int16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    dose = grid.with_array(np.where(i < 15, 70.0, 20.0).astype(np.float32))
    masks = {}
    for name, rows in (("PTV70", slice(2, 12)), ("LeftParotid", slice(18, 25)), ("SpinalCord", slice(10, 20))):
        mask = np.zeros(shape, dtype=bool)
        mask[rows, 10:20, 10:20] = True
        masks[name] = grid.with_array(mask)
    case = Case("synthetic", grid, masks, dose, grid.with_array(np.ones(shape, dtype=bool)))
    result = evaluate_plan(case, step_gy=1.0)
    assert set(result.dvhs) == set(masks)
    checks = by_key(result.constraints)
    assert checks[("PTV70", "D95")]["result"] == "pass"
    assert checks[("LeftParotid", "Dmean")]["result"] == "pass"
    assert checks[("SpinalCord", "D0.1cc")]["result"] == "fail"
    assert checks[("RightParotid", "Dmean")]["result"] == "not evaluated"
    assert result.counts() == {"pass": 2, "fail": 1, "not evaluated": 3}
