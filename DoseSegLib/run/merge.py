"""Joining the outputs of a cohort run in shards (``doseseg run --shard K/N``) into one cohort summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.tables import Row, read_csv
from DoseSegLib.run.results import COHORT_COLUMNS

SUMMARY = "cohort_summary.csv"
MERGED_COLUMNS = (*COHORT_COLUMNS, "output")


def merge_cohort_rows(outputs: Sequence[Path]) -> list[dict[str, str]]:
    """The rows of every shard's cohort_summary.csv, shard after shard, each with its patient's "output" folder.

    Raises:
        DoseSegError: a shard listed twice, a shard without a summary, or a patient in two shards.
    """
    resolved = [Path(out).resolve() for out in outputs]
    for i, out in enumerate(resolved):
        if out in resolved[:i]:
            raise DoseSegError(f"{outputs[i]}: shard output listed twice")
    rows: list[Row] = []
    seen: dict[str, Path] = {}
    for out, given in zip(resolved, outputs, strict=True):
        summary = out / SUMMARY
        if not summary.is_file():
            raise DoseSegError(f"{given}: no {SUMMARY} (not a finished `doseseg run --shard` output)")
        for row in read_csv(summary, required=("patient", "status")):
            patient = row["patient"]
            if patient in seen:
                raise DoseSegError(f"patient {patient} is in both {seen[patient]} and {given}: the shards overlap "
                                   "(run them with the same --shard N on the same patient list)")
            seen[patient] = given
            rows.append({**row, "output": str(out / patient) if row["status"] != "failed" else ""})
    return rows
