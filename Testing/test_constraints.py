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
    assert goals[("LeftParotid", "Mean[Gy]")].value == goals[("RightParotid", "Mean[Gy]")].value == 26
    assert (goals[("SpinalCord", "D0.1cc[Gy]")].operator, goals[("SpinalCord", "D0.1cc[Gy]")].value) == ("<", 45)
    assert goals[("Brainstem", "D0.1cc[Gy]")].value == 54
    assert goals[("Mandible", "D0.1cc[Gy]")].value == 73.5
    ptv = goals[("PTV*", "D95%[Gy]")]
    assert (ptv.operator, ptv.value, ptv.unit) == (">=", 95, "pct_rx")


def test_pass_fail_and_own_prescriptions() -> None:
    rows = [
        {"structure": "LeftParotid", "Mean[Gy]": 24.0},
        {"structure": "RightParotid", "Mean[Gy]": 31.0},
        {"structure": "SpinalCord", "D0.1cc[Gy]": 45.0},  # not < 45
        {"structure": "PTV70", "D95%[Gy]": 66.6},  # >= 66.5
        {"structure": "PTV56", "D95%[Gy]": 53.0},  # < 53.2
    ]
    results = by_key(evaluate_constraints(rows, load_constraints(), prescription=70.0))
    assert results[("LeftParotid", "Mean[Gy]")]["result"] == "pass"
    assert results[("RightParotid", "Mean[Gy]")]["result"] == "fail"
    assert results[("SpinalCord", "D0.1cc[Gy]")]["result"] == "fail"
    assert results[("PTV70", "D95%[Gy]")]["result"] == "pass"
    assert results[("PTV70", "D95%[Gy]")]["limit"] == pytest.approx(66.5)
    assert results[("PTV56", "D95%[Gy]")]["limit"] == pytest.approx(53.2)
    assert results[("PTV56", "D95%[Gy]")]["result"] == "fail"
    for absent in ("Brainstem", "Mandible"):
        assert results[(absent, "D0.1cc[Gy]")]["result"] == "not evaluated"
        assert "not in this patient" in results[(absent, "D0.1cc[Gy]")]["detail"]


def test_pct_rx_without_a_prescription_is_not_evaluated() -> None:
    goal = Constraint("CTV", "D95%[Gy]", ">=", 95, "pct_rx")
    (result,) = evaluate_constraints([{"structure": "CTV", "D95%[Gy]": 60.0}], [goal])
    assert result["result"] == "not evaluated"
    (result,) = evaluate_constraints([{"structure": "CTV", "D95%[Gy]": 60.0}], [goal], prescription=60.0)
    assert result["result"] == "pass" and result["limit"] == pytest.approx(57.0)
    (result,) = evaluate_constraints([{"structure": "CTV", "D95%[Gy]": 60.0}], [goal], prescription={"CTV": 66.0})
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
    rows = [{"structure": "Larynx", "V50Gy[%]": 25.0, "V50Gy[cc]": 5.0, "V60Gy[%]": 10.0, "V60Gy[cc]": 2.0}]
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
    with pytest.raises(DoseSegError, match=r"missing column\(s\) operator$"):  # unit may come from the name
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
    assert checks[("PTV70", "D95%[Gy]")]["result"] == "pass"
    assert checks[("LeftParotid", "Mean[Gy]")]["result"] == "pass"
    assert checks[("SpinalCord", "D0.1cc[Gy]")]["result"] == "fail"
    assert checks[("RightParotid", "Mean[Gy]")]["result"] == "not evaluated"
    assert checks[("PTV70", "D98%[Gy]")]["result"] == checks[("PTV70", "D2%[Gy]")]["result"] == "pass"
    # 9 goals on structures this case lacks (RightParotid, Brainstem, Mandible, Larynx, Esophagus, lenses,
    # optic nerves, chiasm, cochleae)
    assert result.counts() == {"pass": 4, "fail": 1, "not evaluated": 9}


def test_old_and_tg263_metric_names(tmp_path: Path) -> None:
    """Tables written with the old names keep working; TG-263 names may carry their unit."""
    path = tmp_path / "goals.csv"
    path.write_text(
        "structure,metric,operator,value,unit\n"
        "Parotid,Dmean,<,26,Gy\nCord,D0.1cc,<,45,Gy\nPTV,D95,>=,95,pct_rx\nCord,Dmax,<,50,Gy\n"
        "Parotid,Mean[Gy],<,26,\nPTV,D95%[%],>=,95,\nLung,V20Gy[%],<,30,\nLung,V5Gy[cc],<,500,cc\n"
        "Lens,D0.03cc[Gy],<,8,\n"
    )
    goals = [(g.metric, g.unit) for g in load_constraints(path)]
    assert goals == [
        ("Mean[Gy]", "Gy"), ("D0.1cc[Gy]", "Gy"), ("D95%[Gy]", "pct_rx"), ("Max[Gy]", "Gy"),
        ("Mean[Gy]", "Gy"), ("D95%[Gy]", "pct_rx"), ("V20Gy[%]", "pct"), ("V5Gy[cc]", "cc"), ("D0.03cc[Gy]", "Gy"),
    ]
    for bad, message in (("Lung,V20Gy[%],<,30,cc", "contradicts"), ("Lung,V20Gy,<,30,", "must be one of pct, cc"),
                         ("Lung,Dfoo,<,30,Gy", "unknown metric 'Dfoo'")):
        path.write_text("structure,metric,operator,value,unit\n" + bad + "\n")
        with pytest.raises(DoseSegError, match=message):
            load_constraints(path)


def test_site_tables_cite_their_sources() -> None:
    """Every default goal names its source; the prostate table is there by name; targets get D2% <= 107%."""
    for site in ("head-and-neck", "prostate"):
        goals = load_constraints(site)
        assert goals and all(g.note for g in goals), site
        assert any(g.metric == "D2%[Gy]" and g.value == 107 and g.unit == "pct_rx" for g in goals)
    prostate = {(g.structure, g.metric): g for g in load_constraints("prostate")}
    assert prostate[("Rectum", "V70Gy[%]")].value == 20 and "QUANTEC" in prostate[("Rectum", "V70Gy[%]")].note
    head_neck = {g.structure for g in load_constraints()}
    assert {"Larynx", "Esophagus", "Lens*", "OpticChiasm", "Cochlea*", "Brainstem", "SpinalCord"} <= head_neck
