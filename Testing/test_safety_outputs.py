"""No command ever loses a file: overlapping outputs, path traversal, --force, races, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_helpers import cli_error as _cli
from DoseSegLib.cli.main import build_parser
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import MAX_FILENAME, safe_filename, structure_filenames
from DoseSegLib.io.output_swap import host_tag
from DoseSegLib.io.outputs import MARKER, check_output_dir, staged_output, sweep_stale
from DoseSegLib.io.patient import write_segmentation

REPO = Path(__file__).resolve().parents[1]
TreeHash = Callable[[Path], dict[str, str]]


# --- 1. the output never equals, contains or lies inside an input ------------------------------------------

@pytest.mark.parametrize("output, force", [(".", True), ("..", True), ("res", False), ("res", True)])
def test_predict_dose_refuses_an_output_that_is_inside_or_contains_its_input(
    phantom_dir: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash, output: str, force: bool
) -> None:
    """``predict-dose pt -o pt --force``, ``-o <parent> --force`` (with a user's notes), ``-o pt/res``."""
    (phantom_dir.parent / "notes.txt").write_text("mine")
    before = tree_hash(phantom_dir.parent)
    out = {"..": phantom_dir.parent, ".": phantom_dir, "res": phantom_dir / "res"}[output]
    code, err = _cli(capsys, "predict-dose", phantom_dir, "-o", out, *(["--force"] if force else []))
    assert code == 1 and "overlaps the input" in err
    assert tree_hash(phantom_dir.parent) == before


def _commands_with_output() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {name for name, p in sub.choices.items() if any("-o" in a.option_strings for a in p._actions)}


def _argv(command: str, patient: Path, out: Path, role: str) -> list[str | Path]:
    """``command`` reading ``patient`` (as its positional input or its ``--reference``) and writing ``out``."""
    other = patient.parent / "elsewhere"
    if command in ("evaluate", "evaluate-seg"):
        pair = [patient, "--reference", other] if role == "positional" else [other, "--reference", patient]
        return [command, *pair, "-o", out, "--force"]
    if command == "sensitivity":
        return [command, patient, "--structure", "PTV70", "-o", out, "--force"]
    if command == "export-dicom":
        pair = [patient, "--ct", other] if role == "positional" else [other, "--ct", patient]
        return [command, *pair, "-o", out, "--force"]
    return [command, patient, "-o", out, "--force"]


CASES = [(command, role) for command in sorted(_commands_with_output() - {"demo"})
         for role in (("positional", "reference") if command.startswith(("evaluate", "export")) else ("positional",))]


@pytest.mark.parametrize("relation", ["same", "inside", "contains"])
@pytest.mark.parametrize("command, role", CASES)
def test_every_command_refuses_an_output_overlapping_an_input(
    phantom_dir: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash, command: str, relation: str, role: str
) -> None:
    (phantom_dir.parent / "elsewhere").mkdir(exist_ok=True)
    out = {"same": phantom_dir, "inside": phantom_dir / "structures" / "res", "contains": phantom_dir.parent}[relation]
    before = tree_hash(phantom_dir.parent)
    code, err = _cli(capsys, *_argv(command, phantom_dir, out, role))
    assert code == 1 and "overlaps the input" in err, err
    assert tree_hash(phantom_dir.parent) == before


def test_the_overlap_check_knows_every_command() -> None:
    """A new command writing -o must be added to the class test above (demo reads no input)."""
    assert {"align", "import-openkbp", "predict-dose", "segment", "evaluate-seg", "dvh", "evaluate", "radiomics",
            "features", "run", "demo", "export-dicom", "merge-cohort", "sensitivity",
            "build-cohort"} == _commands_with_output()


def test_an_output_under_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DoseSegError, match=r"file.txt is a file, not a folder"):
        check_output_dir(tmp_path / "file.txt" / "out", False, [])


# --- 2. structure names become file names through one sanitiser ---------------------------------------------

HOSTILE = ["../../../other/pt_9/ct", "/etc/passwd", "..", ".", "", "a/b", "a\\b", "C:evil", "x\x00y", "tab\there",
           "\x1b[31mred", ".hidden", "CON", "nul.txt", "a" * 500, "ok~name", "Lens - left", "PTV 70/2"]


@pytest.mark.parametrize("name", HOSTILE)
def test_safe_filename_is_never_a_path(name: str) -> None:
    stem = safe_filename(name)
    assert stem and not stem.startswith(".") and len(stem) <= MAX_FILENAME
    assert not any(c in stem for c in '/\\:*?"<>|') and all(ord(c) >= 32 and ord(c) != 127 for c in stem)
    assert Path(stem).name == stem and stem.split(".")[0].upper() not in ("CON", "NUL")


def test_ordinary_names_are_kept() -> None:
    assert [safe_filename(n) for n in ("Brainstem", "PTV70", "Lens - left", "Optic Nerve - Rt")] == [
        "Brainstem", "PTV70", "Lens - left", "Optic Nerve - Rt"]


def test_distinct_names_keep_distinct_files() -> None:
    names = [*HOSTILE, "a_b", "a:b", "a*b", "A/B", "a" * 501, "Brainstem", "brainstem", "x_y", "x\x01y"]
    files = structure_filenames(names)
    assert len({f.lower() for f in files.values()}) == len(names)


def _seg_with(folder: Path, names: list[str]) -> Path:
    from DoseSegLib.io.patient import read_mask

    mask = read_mask(folder / "structures" / "Brainstem.nrrd")
    path = folder.parent / "evil.seg.nrrd"
    write_segmentation(path, {name: mask for name in names})
    return path


def test_align_segment_names_cannot_escape(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           tree_hash: TreeHash) -> None:
    """A segment named ``../../../other/pt_9/ct`` must not overwrite another patient's CT."""
    victim = tmp_path / "other" / "pt_9"
    victim.mkdir(parents=True)
    (victim / "ct.nrrd").write_text("precious")
    absolute = str(tmp_path / "abs")
    seg = _seg_with(phantom_dir, ["../../../other/pt_9/ct", absolute, "Brainstem"])
    before = tree_hash(tmp_path / "other")
    out = tmp_path / "a" / "b" / "out"
    code, err = _cli(capsys, "align", phantom_dir, "--segmentation", seg, "-o", out)
    assert code == 0, err
    assert tree_hash(tmp_path / "other") == before and not Path(absolute + ".nrrd").exists()
    assert all(p.parent == out / "structures" for p in (out / "structures").rglob("*"))
    assert len(list((out / "structures").glob("*.nrrd"))) == 3


def test_names_json_cannot_escape(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--names '{"Brainstem": "../../../x"}'`` wrote x.nrrd three folders above the output."""
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"Brainstem": "../../../x", "SpinalCord": str(tmp_path / "y")}))
    out = tmp_path / "a" / "b" / "c" / "out"
    assert _cli(capsys, "align", phantom_dir, "-o", out, "--names", names)[0] == 0
    assert not list(tmp_path.rglob("x.nrrd")) and not (tmp_path / "y.nrrd").exists()
    assert all(p.parent == out / "structures" for p in (out / "structures").rglob("*"))


# --- 3. --force replaces only DoseSeg results ---------------------------------------------------------------

def test_force_refuses_a_folder_doseseg_did_not_write(phantom_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture, tree_hash: TreeHash) -> None:
    out = tmp_path / "mine"
    (out / "photos").mkdir(parents=True)
    (out / "thesis.docx").write_text("three years")
    before = tree_hash(out)
    code, err = _cli(capsys, "align", phantom_dir, "-o", out, "--force")
    assert code == 1 and "photos, thesis.docx" in err and "did not write" in err
    assert tree_hash(out) == before


def test_force_refuses_files_added_to_doseseg_results(phantom_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert _cli(capsys, "align", phantom_dir, "-o", out)[0] == 0
    assert (out / MARKER).is_file()
    (out / "notes.txt").write_text("mine")
    code, err = _cli(capsys, "align", phantom_dir, "-o", out, "--force")
    assert code == 1 and "notes.txt" in err
    (out / "notes.txt").unlink()
    assert _cli(capsys, "align", phantom_dir, "-o", out, "--force")[0] == 0


# --- 4. two runs into one output: the loser fails clearly ----------------------------------------------------

@pytest.mark.parametrize("existing", [False, True])
def test_concurrent_runs_the_loser_fails(tmp_path: Path, existing: bool) -> None:
    out = tmp_path / "out"
    if existing:
        with staged_output(out, False, []) as staging:
            (staging / "r.txt").write_text("old")
    with pytest.raises(DoseSegError, match="another run wrote this output folder"):
        with staged_output(out, True, []) as first:
            with staged_output(out, True, []) as second:
                (second / "r.txt").write_text("second")
            (first / "r.txt").write_text("first")
    assert (out / "r.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- 5. SIGTERM is Ctrl-C; partial folders of dead processes are swept --------------------------------------

def test_sigterm_leaves_no_partial_output(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from DoseSegLib.io.outputs import staged_output
        with staged_output({str(tmp_path / "out")!r}, False, []) as staging:
            (staging / "half.txt").write_text("x")
            print("ready", flush=True)
            time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_partials_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead, alive, host = _dead_pid(), os.getpid(), host_tag()
    for name in (f".out.partial-{host}-{dead}-abc", f".other.partial-{host}-{dead}-x",
                 f".out.partial-{host}-{alive}-def"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    (tmp_path / ".user.partial-notes").mkdir()  # not a DoseSeg staging name: kept
    with staged_output(tmp_path / "out", False, []) as staging:
        (staging / "r.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".out.partial-{host}-{alive}-def", ".user.partial-notes", "out"])
    assert sweep_stale(tmp_path / "absent") == []


def test_sigkill_partial_is_swept_by_the_next_run(tmp_path: Path) -> None:
    script = f"""
import time
from DoseSegLib.io.outputs import staged_output
with staged_output({str(tmp_path / "out")!r}, False, []) as staging:
    print("ready", flush=True)
    time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert [p.name.startswith(".out.partial-") for p in tmp_path.iterdir()] == [True]
    with staged_output(tmp_path / "out", False, []) as staging:
        (staging / "r.txt").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
