"""``doseseg merge-cohort``: one cohort summary from the outputs of ``doseseg run --shard K/N`` tasks."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_merge_cohort(args: argparse.Namespace) -> int:
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.tables import write_csv
    from DoseSegLib.run.merge import MERGED_COLUMNS, SUMMARY, merge_cohort_rows

    check_output_dir(args.output, args.force, args.shards)
    rows = merge_cohort_rows(args.shards)
    with staged_output(args.output, args.force, args.shards) as out:
        write_csv(out / SUMMARY, rows, MERGED_COLUMNS)
    failed = [row["patient"] for row in rows if row["status"] != "ok"]
    print(f"wrote {args.output / SUMMARY} ({len(rows)} patients from {len(args.shards)} shards"
          f"{'; failed: ' + ', '.join(failed) if failed else ''})")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge-cohort", help="join the cohort_summary.csv of `doseseg run --shard` outputs",
                       description="Join the cohort summaries of the shards of a cohort (doseseg run --shard K/N "
                                   "outputs) into MERGED/cohort_summary.csv, with each patient's output folder; "
                                   "refuses a patient found in two shards.")
    p.add_argument("shards", type=Path, nargs="+", help="the shards' output folders (e.g. results/shard-*)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the merged cohort_summary.csv")
    p.add_argument("--force", action="store_true", help="replace an output folder that holds results")
    p.set_defaults(func=cmd_merge_cohort)
