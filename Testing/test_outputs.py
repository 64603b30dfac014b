"""Safe output folders: results appear whole or not at all, existing results are kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.outputs import MARKER, check_output_dir, staged_output


def _write(folder: Path, name: str = "result.txt", text: str = "new") -> None:
    (folder / name).write_text(text)


def test_success_moves_results_into_place(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_output(out, False, []) as staging:
        assert staging != out and staging.parent == out.parent
        assert not out.exists()
        _write(staging)
    assert (out / "result.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_nested_new_output_folder_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with staged_output(out, False, []) as staging:
        _write(staging)
    assert (out / "result.txt").is_file()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_leaves_no_partial_output(tmp_path: Path, error: type[BaseException]) -> None:
    out = tmp_path / "out"
    with pytest.raises(error):
        with staged_output(out, False, []) as staging:
            _write(staging)
            raise error()
    assert list(tmp_path.iterdir()) == []


def test_existing_results_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _write(out, text="old")
    with pytest.raises(DoseSegError, match=r"out: output folder already holds results.*--force"):
        with staged_output(out, False, []):
            pytest.fail("must not start")
    assert (out / "result.txt").read_text() == "old"


def _previous_results(out: Path, name: str = "result.txt", text: str = "old") -> None:
    with staged_output(out, False, []) as staging:
        _write(staging, name, text)


def test_force_replaces_existing_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _previous_results(out, "stale.txt")
    with staged_output(out, True, []) as staging:
        _write(staging)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "result.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_with_force_keeps_old_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _previous_results(out)
    with pytest.raises(RuntimeError):
        with staged_output(out, True, []) as staging:
            _write(staging)
            raise RuntimeError
    assert (out / "result.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_empty_existing_folder_is_accepted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with staged_output(out, False, []) as staging:
        _write(staging)
    assert (out / "result.txt").is_file()


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("x")
    with pytest.raises(DoseSegError, match="not a folder"):
        check_output_dir(out, True, [])


@pytest.mark.parametrize("relation", ["same", "inside", "contains"])
def test_output_overlapping_an_input_is_refused(tmp_path: Path, relation: str) -> None:
    patient = tmp_path / "patient"
    patient.mkdir()
    _write(patient, "ct.nrrd", "ct")
    out = {"same": patient, "inside": patient / "out", "contains": tmp_path}[relation]
    with pytest.raises(DoseSegError, match="overlaps the input"):
        with staged_output(out, force=True, inputs=[patient, None]):
            pytest.fail("must not start")
    assert sorted(p.name for p in patient.iterdir()) == ["ct.nrrd"]


def test_sibling_output_is_not_an_overlap(tmp_path: Path) -> None:
    (tmp_path / "pt").mkdir()
    check_output_dir(tmp_path / "pt_out", force=False, inputs=[tmp_path / "pt"])


def test_results_get_the_users_usual_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        with staged_output(tmp_path / "out", False, []) as staging:
            (staging / "a.txt").write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_every_listed_output_file_has_exactly_one_writer() -> None:
    """run/results.py lists the files (descriptions, when each is written); run/writer.py writes them:
    the two tables name the same files."""
    from types import SimpleNamespace

    from DoseSegLib.run.results import OUTPUT_FILES
    from DoseSegLib.run.writer import _writers

    result = SimpleNamespace(case=SimpleNamespace(structures={}, source=None, dicom_series=None), comparison=None,
                             auto_segmented=[])
    assert sorted(_writers(result)) == sorted(entry.name for entry in OUTPUT_FILES)
