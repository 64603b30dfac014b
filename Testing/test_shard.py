"""``--shard K/N`` (scheduler array tasks over a cohort) and ``doseseg merge-cohort``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from cli_helpers import run_cli
from model_helpers import write_tiny_catalogue

from DoseSegLib.cli.shard import apply_shard, parse_shard, shard_items
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.phantom import write_phantom_patient
from DoseSegLib.io.tables import read_csv

SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")


def test_shards_1_2_3_of_3_partition_the_list_in_its_given_order() -> None:
    patients = [f"p{i}" for i in (7, 1, 10, 3, 2, 9, 5)]  # not sorted: positions count, not names
    shards = [shard_items(patients, k, 3) for k in (1, 2, 3)]
    assert shards == [["p7", "p3", "p5"], ["p1", "p2"], ["p10", "p9"]]
    for size in range(9):  # every list length and shard count: each patient in exactly one shard
        items = list(range(size))
        for count in range(1, 6):
            parts = [shard_items(items, k, count) for k in range(1, count + 1)]
            assert sorted(i for part in parts for i in part) == items
            assert all(part == sorted(part) for part in parts)


@pytest.mark.parametrize(("text", "expected"), [("1/3", (1, 3)), ("3/3", (3, 3)), ("1/1", (1, 1)), ("12/40", (12, 40))])
def test_shard_values(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text, {}) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("0/3", "K must be from 1 to N"), ("4/3", "K must be from 1 to N"), ("1/0", "K must be from 1 to N"),
    ("3", "expected K/N"), ("a/b", "expected K/N"), ("-1/3", "expected K/N"), ("1/3/2", "expected K/N"),
    ("", "expected K/N"), ("1.5/3", "expected K/N"),
])
def test_bad_shard_values_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(DoseSegError, match=message):
        parse_shard(text, {})


def test_shard_auto_reads_the_slurm_array_variables() -> None:
    assert parse_shard("auto", dict(zip(SLURM, ("5", "4", "3")))) == (2, 3)  # --array=4-6, task 5
    assert parse_shard("auto", dict(zip(SLURM, ("0", "0", "8")))) == (1, 8)  # --array=0-7
    with pytest.raises(DoseSegError, match="SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT "
                                           "not set"):
        parse_shard("auto", {})
    with pytest.raises(DoseSegError, match="SLURM_ARRAY_TASK_COUNT not set"):
        parse_shard("auto", dict(zip(SLURM[:2], ("1", "1"))))
    with pytest.raises(DoseSegError, match="array task 6 is not among 3 tasks from 0"):
        parse_shard("auto", dict(zip(SLURM, ("6", "0", "3"))))  # --array=0-6:3 (a step)
    with pytest.raises(DoseSegError, match="not whole numbers"):
        parse_shard("auto", dict(zip(SLURM, ("x", "0", "3"))))


def test_apply_shard_keeps_the_share_and_refuses_colliding_names(monkeypatch, capsys) -> None:
    args = argparse.Namespace(shard=None, patients=[Path("a"), Path("b")])
    assert apply_shard(args) and args.patients == [Path("a"), Path("b")]  # no --shard: unchanged
    for name, value in zip(SLURM, ("3", "1", "4")):
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(shard="auto", patients=[Path(p) for p in "abcdefg"])
    assert apply_shard(args) and args.patients == [Path("c"), Path("g")]
    assert "shard 3/4: 2 of 7 patients" in capsys.readouterr().out
    with pytest.raises(DoseSegError, match="share a name"):  # collisions are checked on the whole list
        apply_shard(argparse.Namespace(shard="1/2", patients=[Path("x/a"), Path("b"), Path("y/a")]))


def test_empty_shard_exits_0_with_a_message_and_no_output(tmp_path: Path, capsys) -> None:
    patients = [tmp_path / "a", tmp_path / "b"]
    for command in ("run", "predict-dose", "segment"):
        code, out, _ = run_cli(capsys, command, *patients, "-o", tmp_path / command, "--shard", "3/3")
        assert code == 0 and "shard 3/3: no patient (2 in the list); nothing to do" in out
        assert not (tmp_path / command).exists()
    code, _, err = run_cli(capsys, "segment", *patients, "-o", tmp_path / "bad", "--shard", "4/3")
    assert code == 1 and "--shard 4/3: K must be from 1 to N" in err


def test_run_shards_then_merge_cohort(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DOSESEG_MODELS", str(write_tiny_catalogue(tmp_path / "models")))
    patients = [tmp_path / "in" / name for name in ("c", "a", "b")]
    for seed, folder in enumerate(patients):
        write_phantom_patient(folder, shape=(40, 40, 32), seed=seed)
    common = ("--no-radiomics", "--no-segment", "--device", "cpu")
    shards = [tmp_path / "results" / f"shard-{k}" for k in (1, 2)]
    for k, out in enumerate(shards, 1):
        code, stdout, _ = run_cli(capsys, "run", *patients, "-o", out, "--shard", f"{k}/2", *common)
        assert code == 0 and f"shard {k}/2" in stdout
    # shard 2 holds one patient and still writes OUT/<patient>/ with a cohort summary
    assert sorted(p.name for p in shards[0].iterdir()) == [".doseseg-output.json", "b", "c", "cohort_summary.csv"]
    assert sorted(p.name for p in shards[1].iterdir()) == [".doseseg-output.json", "a", "cohort_summary.csv"]
    assert (shards[1] / "a" / "report.html").is_file()

    merged = tmp_path / "merged"
    code, stdout, _ = run_cli(capsys, "merge-cohort", *shards, "-o", merged)
    assert code == 0 and "3 patients from 2 shards" in stdout
    rows = read_csv(merged / "cohort_summary.csv", ("patient", "status", "output"))
    assert [r["patient"] for r in rows] == ["c", "b", "a"] and {r["status"] for r in rows} == {"ok"}
    assert all(Path(r["output"], "dose.nrrd").is_file() for r in rows)

    code, _, err = run_cli(capsys, "merge-cohort", shards[0], shards[0], "-o", tmp_path / "twice")
    assert code == 1 and "shard output listed twice" in err and not (tmp_path / "twice").exists()
    overlap = tmp_path / "results" / "all"
    assert run_cli(capsys, "run", *patients[1:], "-o", overlap, "--shard", "1/1", *common)[0] == 0
    code, _, err = run_cli(capsys, "merge-cohort", *shards, overlap, "-o", tmp_path / "overlap")
    assert code == 1 and "patient a is in both" in err and "the shards overlap" in err
    assert not (tmp_path / "overlap").exists()
    code, _, err = run_cli(capsys, "merge-cohort", shards[0], tmp_path / "in", "-o", tmp_path / "none")
    assert code == 1 and "no cohort_summary.csv" in err
