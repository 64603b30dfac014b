"""Clinical DVH goals (an editable CSV table) checked against a plan's DVH metrics."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from DoseSegLib.analysis.metric_names import canonical_metric, volume_dose
from DoseSegLib.core.case import target_prescription
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.tables import Row, read_csv, write_csv

__all__ = [
    "CONSTRAINT_COLUMNS",
    "DEFAULT_CONSTRAINTS",
    "OPERATORS",
    "RESULT_COLUMNS",
    "SITE_TABLES",
    "Constraint",
    "evaluate_constraints",
    "load_constraints",
    "set_aside",
    "v_doses",
    "write_constraints_csv"
]

DEFAULT_CONSTRAINTS = Path(__file__).resolve().parents[1] / "data" / "constraints.csv"
SITE_TABLES = {
    "head-and-neck": DEFAULT_CONSTRAINTS, "prostate": DEFAULT_CONSTRAINTS.with_name("constraints_prostate.csv"),
}
CONSTRAINT_COLUMNS = ("structure", "metric", "operator", "value")
RESULT_COLUMNS = ("structure", "metric", "operator", "limit", "limit_unit", "value", "result", "detail")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
PASS, FAIL, NOT_EVALUATED = "pass", "fail", "not evaluated"


@dataclass(frozen=True)
class Constraint:
    """One DVH goal.

    Attributes:
        structure: structure name, or a shell pattern such as ``PTV*``.
        metric: the TG-263 name of the metrics-table column it reads (``Mean[Gy]``, ``Max[Gy]``,
            ``D95%[Gy]``, ``D0.1cc[Gy]``, ``V30Gy[%]``, ``V30Gy[cc]``; see ``metric_names``).
        operator: one of <, <=, >, >=.
        value: the limit.
        unit: Gy or pct_rx (percent of the structure's prescription) for D metrics;
            pct (percent of the structure) or cc for V metrics.
        note: free text (source of the goal).
    """

    structure: str
    metric: str
    operator: str
    value: float
    unit: str
    note: str = ""

    @property
    def v_dose(self) -> float | None:
        """x of a VxGy metric, else None."""
        return volume_dose(self.metric)


def _parse(row: dict[str, str], where: str) -> Constraint:
    fields = {k: (row.get(k) or "").strip() for k in (*CONSTRAINT_COLUMNS, "unit", "note")}
    try:
        value = float(fields["value"])
    except ValueError:
        raise DoseSegError(f"{where}: value '{fields['value']}' is not a number") from None
    if fields["operator"] not in OPERATORS:
        raise DoseSegError(f"{where}: operator '{fields['operator']}' is not one of {' '.join(OPERATORS)}")
    try:
        metric, unit = canonical_metric(fields["metric"], fields["unit"])
    except ValueError as exc:
        raise DoseSegError(f"{where}: {exc}") from None
    if not fields["structure"]:
        raise DoseSegError(f"{where}: no structure")
    return Constraint(fields["structure"], metric, fields["operator"], value, unit, fields["note"])


def load_constraints(path: str | Path | None = None) -> list[Constraint]:
    """Read a constraint table (columns structure, metric, operator, value[, unit][, note]).

    The unit (Gy or pct_rx for doses, pct or cc for volumes) may be left out where the metric's
    TG-263 name says it (``V20Gy[%]``, ``D95%[%]``); doses default to Gy. Older names
    (``Dmean``, ``D95``, ``D0.1cc``, ``V20Gy``) are read too.

    Args:
        path: a CSV file, or the name of one of DoseSegLib's site tables (``head-and-neck``,
            ``prostate``; conventional fractionation, sources in their ``note``); head and neck when None.
    """
    if path is None or (str(path) in SITE_TABLES and not Path(path).is_file()):
        path = SITE_TABLES[str(path or "head-and-neck")]
    path = Path(path)
    rows = read_csv(path, CONSTRAINT_COLUMNS)
    return [
        _parse(row, f"{path}: line {line}")
        for line, row in enumerate(rows, start=2)
        if not (row.get("structure") or "").lstrip().startswith("#")
    ]


def v_doses(constraints: Sequence[Constraint]) -> list[float]:
    """The doses x of every VxGy goal, to pass to ``metrics_table(v_gy=...)``."""
    return sorted({c.v_dose for c in constraints if c.v_dose is not None})


def _prescription_of(name: str, prescription: float | Mapping[str, float] | None) -> float | None:
    """A target's own prescription (given, or from its PTV<dose> name), else the plan's."""
    if isinstance(prescription, Mapping):
        return prescription.get(name, target_prescription(name))
    own = target_prescription(name)
    return own if own is not None else prescription


def _check(constraint: Constraint, row: Row, prescription: float | Mapping[str, float] | None) -> Row:
    name = str(row["structure"])
    result: Row = {"structure": name, "metric": constraint.metric, "operator": constraint.operator}
    limit, limit_unit, detail = constraint.value, constraint.unit, constraint.note
    if constraint.unit == "pct_rx":
        rx = _prescription_of(name, prescription)
        if rx is None:
            return {**result, "limit": limit, "limit_unit": "% of prescription", "result": NOT_EVALUATED,
                    "detail": "not evaluated (no prescription): give it with --prescription NAME=GY"}
        limit, limit_unit = constraint.value / 100 * rx, "Gy"
        detail = f"{constraint.value:g}% of {rx:g} Gy" + (f"; {constraint.note}" if constraint.note else "")
    value = row.get(constraint.metric)
    if value is None:
        why = f"metric {constraint.metric} was not computed" + (f" ({row['note']})" if row.get("note") else "")
        return {**result, "limit": limit, "limit_unit": limit_unit, "result": NOT_EVALUATED, "detail": why}
    passed = OPERATORS[constraint.operator](float(value), limit)
    return {**result, "limit": limit, "limit_unit": limit_unit, "value": value,
            "result": PASS if passed else FAIL, "detail": detail}


def evaluate_constraints(
    metrics_rows: Sequence[Row],
    constraints: Sequence[Constraint],
    prescription: float | Mapping[str, float] | None = None,
) -> list[Row]:
    """Pass/fail of every goal for every matching structure; goals whose structure is absent are "not evaluated".

    Args:
        metrics_rows: rows of ``metrics_table`` (with the V_x columns the goals need).
        constraints: the goals (``load_constraints``).
        prescription: the plan's prescription (Gy), or each target's; a ``PTV<dose>`` name
            gives its own prescription otherwise.
    """
    results = []
    for constraint in constraints:
        matched = [row for row in metrics_rows if fnmatchcase(str(row["structure"]), constraint.structure)]
        if not matched:
            results.append({"structure": constraint.structure, "metric": constraint.metric,
                            "operator": constraint.operator, "limit": constraint.value,
                            "limit_unit": "% of prescription" if constraint.unit == "pct_rx" else constraint.unit,
                            "result": NOT_EVALUATED, "detail": "structure not in this patient"})
        results.extend(_check(constraint, row, prescription) for row in matched)
    return results


def set_aside(results: Sequence[Row], reasons: Mapping[str, str]) -> list[Row]:
    """The goal rows with those of the structures in ``reasons`` (name -> why) turned "not evaluated", limit kept."""
    return [{**row, "result": NOT_EVALUATED, "value": None, "detail": reasons[str(row["structure"])]}
            if str(row["structure"]) in reasons else dict(row) for row in results]


def write_constraints_csv(path: str | Path, results: Sequence[Row]) -> None:
    """Write constraint results as ``constraints.csv``."""
    write_csv(path, results, RESULT_COLUMNS)
