"""Issue #28, items 1, 3-6 and 16: no output handling loses a file (item 2, the what-if worker, is in
test_safety_whatif.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cli_helpers import cli_error as _cli
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.output_marker import MARKER, STAGING
from DoseSegLib.io.output_swap import exchange, host_tag
from DoseSegLib.io.outputs import check_output_dir, staged_output

REPO = Path(__file__).resolve().parents[1]
TreeHash = Callable[[Path], dict[str, str]]


def _results(out: Path, force: bool = False, files: dict[str, str] | None = None) -> None:
    with staged_output(out, force, []) as staging:
        for name, text in (files or {"a.txt": "old", "sub/deep/b.txt": "old"}).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text)


# --- 1. --force replaces only the files DoseSeg wrote, at any depth ----------------------------------------

def test_force_keeps_a_note_inside_an_align_subfolder(phantom_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture, tree_hash: TreeHash) -> None:
    """The issue's case: ``align P -o A; echo n > A/structures/notes.txt; align P -o A --force``."""
    out = tmp_path / "A"
    assert _cli(capsys, "align", phantom_dir, "-o", out)[0] == 0
    (out / "structures" / "notes.txt").write_text("n\n")
    before = tree_hash(out)
    code, err = _cli(capsys, "align", phantom_dir, "-o", out, "--force")
    assert code == 1 and "structures/notes.txt" in err and "did not write" in err
    assert tree_hash(out) == before
    (out / "structures" / "notes.txt").unlink()
    assert _cli(capsys, "align", phantom_dir, "-o", out, "--force")[0] == 0


@pytest.mark.parametrize("intruder", ["file", "edited", "folder", "link", "fifo"])
def test_force_refuses_anything_doseseg_did_not_write_at_any_depth(tmp_path: Path, intruder: str,
                                                                   tree_hash: TreeHash) -> None:
    out = tmp_path / "out"
    _results(out)
    deep = out / "sub" / "deep"
    name = {"file": "sub/deep/notes.txt", "edited": "sub/deep/b.txt", "folder": "sub/deep/mine",
            "link": "sub/deep/link", "fifo": "sub/deep/pipe"}[intruder]
    if intruder == "file":
        (deep / "notes.txt").write_text("mine")
    elif intruder == "edited":
        (deep / "b.txt").write_text("my edits")
    elif intruder == "folder":
        (deep / "mine").mkdir()
    elif intruder == "link":
        (deep / "link").symlink_to(tmp_path)
    else:
        os.mkfifo(deep / "pipe")
    before = tree_hash(out) if intruder != "fifo" else None
    with pytest.raises(DoseSegError, match=f"did not write: {name}"):
        _results(out, force=True, files={"new.txt": "new"})
    if before is not None:
        assert tree_hash(out) == before
    assert (out / name).exists() or (out / name).is_symlink()


def test_force_replaces_nested_doseseg_results_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _results(out)
    _results(out, force=True, files={"c.txt": "new"})
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [MARKER, "c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- 6. the marker is not enough on its own ------------------------------------------------------------------

def _forged(out: Path, files: dict, **extra: object) -> None:
    marker = {"format": 2, "run_id": "x", "files": files, "folders": [], **extra}
    (out / MARKER).write_text(json.dumps(marker))


@pytest.mark.parametrize("forgery", ["no hash", "wrong hash", "wrong size", "old format", "garbage"])
def test_a_forged_marker_never_lets_force_delete_a_users_file(tmp_path: Path, tree_hash: TreeHash,
                                                              forgery: str) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    thesis = out / "thesis.docx"
    thesis.write_text("three years")
    digest = hashlib.sha256(thesis.read_bytes()).hexdigest()
    if forgery == "old format":
        (out / MARKER).write_text(json.dumps({"run_id": "x", "entries": ["thesis.docx"]}))
    elif forgery == "garbage":
        (out / MARKER).write_text("{not json")
    else:
        record = {"no hash": {"size": 11}, "wrong hash": {"size": 11, "sha256": "0" * 64},
                  "wrong size": {"size": 12, "sha256": digest}}[forgery]
        _forged(out, {"thesis.docx": record})
    before = tree_hash(out)
    with pytest.raises(DoseSegError, match=r"thesis\.docx"):
        _results(out, force=True, files={"r.txt": "x"})
    assert tree_hash(out) == before


# --- 3. the final move: old or new results whole at every instant -----------------------------------------

def _killed_run(out: Path, where: str) -> subprocess.CompletedProcess:
    """A run replacing ``out`` that is SIGKILLed at ``where`` of the final move."""
    script = textwrap.dedent(f"""
        import os, signal, pathlib
        from DoseSegLib.io import output_swap, outputs
        real_rename, real_exchange = pathlib.Path.rename, output_swap.exchange
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
        if {where!r} == "between renames":
            output_swap.exchange = lambda a, b: False
            def rename(self, target):
                if ".partial-" in self.name:
                    die()
                return real_rename(self, target)
            pathlib.Path.rename = rename
        else:
            def exchange(a, b):
                assert real_exchange(a, b)
                die()
            output_swap.exchange = exchange
        with outputs.staged_output({str(out)!r}, True, []) as staging:
            (staging / "a.txt").write_text("new")
            (staging / "c.txt").write_text("new")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)


def _texts(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*.txt")}


@pytest.mark.parametrize("where", ["between renames", "after the exchange"])
def test_sigkill_during_the_final_move_keeps_old_or_new_results_whole(tmp_path: Path, where: str) -> None:
    out = tmp_path / "out"
    _results(out)
    old = _texts(out)
    if where == "after the exchange" and not exchange(tmp_path, tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) not available here")
    assert _killed_run(out, where).returncode == -9
    leftovers = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert leftovers and all(STAGING.match(p.name) for p in leftovers)
    if where == "between renames":  # the old results are whole, in the backup
        assert not out.exists()
        backup = next(p for p in leftovers if ".old-" in p.name)
        assert _texts(backup / "old") == old
    else:  # the new results are whole and in place
        assert _texts(out) == {"a.txt": "new", "c.txt": "new"}
    # the next run never sweeps the only copy: it puts the old results back first
    with pytest.raises(DoseSegError, match="already holds results"):
        _results(out, files={"x.txt": "x"})
    assert _texts(out) == (old if where == "between renames" else {"a.txt": "new", "c.txt": "new"})
    _results(out, force=True, files={"x.txt": "x"})
    assert _texts(out) == {"x.txt": "x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exchange_swaps_two_folders_atomically(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b" / "x").write_text("b")
    if not exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("renameat2(RENAME_EXCHANGE) not available here")
    assert (tmp_path / "a" / "x").read_text() == "b" and (tmp_path / "b" / "x").read_text() == "a"


# --- 4. shards on several hosts share a parent folder -----------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_staging_names_carry_the_host_and_only_this_hosts_dead_runs_are_swept(tmp_path: Path) -> None:
    dead = _dead_pid()
    other = f".shard-2.partial-othernode-{dead}-abc"  # a live task on another node, same PID by chance
    mine = f".shard-3.partial-{host_tag()}-{dead}-abc"
    for name in (other, mine):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dose.nrrd").write_text("half")
    with staged_output(tmp_path / "shard-1", False, []) as staging:
        match = STAGING.match(staging.name)
        assert match and match["host"] == host_tag() and int(match["pid"]) == os.getpid()
        (staging / "r.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other, "shard-1"])


def test_host_tags_never_break_the_staging_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    for host in ("node-01.cluster.local", "ünïcode-host", "", "a" * 300):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        assert STAGING.match(f".out.partial-{host_tag()}-12-abc_9")


# --- 5. an output folder that is a mount point -------------------------------------------------------------

def test_an_output_that_is_a_mount_point_is_written_inside(tmp_path: Path) -> None:
    """In a private mount namespace (unshare), a tmpfs mounted at the output folder."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed")
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = textwrap.dedent(f"""
        import os, pathlib
        from DoseSegLib.io.outputs import staged_output
        out = pathlib.Path({str(mount)!r})
        assert os.path.ismount(out)
        for force, text in ((False, "old"), (True, "new")):
            with staged_output(out, force, []) as staging:
                (staging / "sub").mkdir()
                (staging / "sub" / "r.txt").write_text(text)
                if force:
                    (staging / "extra.txt").write_text(text)
            print(sorted(str(p.relative_to(out)) for p in out.rglob("*")), (out / "sub" / "r.txt").read_text())
        (out / "notes.txt").write_text("mine")
        try:
            with staged_output(out, True, []) as staging:
                (staging / "z.txt").write_text("z")
        except Exception as exc:
            print(type(exc).__name__, "notes.txt" in str(exc), (out / "notes.txt").read_text())
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    probe = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no user/mount namespaces here ({probe.stderr.decode().strip()})")
    proc = subprocess.run(["unshare", "-r", "-m", "sh", "-c", f'mount -t tmpfs none "{mount}" && exec "$0" -c "$1"',
                           sys.executable, script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"[{MARKER!r}, 'sub', 'sub/r.txt'] old"
    assert lines[1] == f"[{MARKER!r}, 'extra.txt', 'sub', 'sub/r.txt'] new"
    assert lines[2] == "DoseSegError True mine"


# --- 16. a failed run leaves nothing -----------------------------------------------------------------------

def test_a_run_that_wrote_nothing_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_output(out, False, []) as staging:
        (staging / "patient").mkdir()  # a folder, but no file: nothing to keep
    assert list(tmp_path.iterdir()) == []


def test_predict_dose_with_every_patient_failing_leaves_nothing(phantom_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    for target in phantom_dir.glob("structures/PTV*.nrrd"):
        target.unlink()
    out = tmp_path / "out"
    code, err = _cli(capsys, "predict-dose", phantom_dir, "-o", out)
    assert code == 1 and "error" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["phantom"]
    code, err = _cli(capsys, "predict-dose", phantom_dir, "-o", out)  # the rerun is not refused either
    assert "already holds results" not in err


def test_a_folder_holding_only_a_marker_is_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _forged(out, {})
    check_output_dir(out, False, [])  # earlier versions left such folders; nothing in them to keep
    _results(out)
    assert (out / "a.txt").read_text() == "old"


def test_a_killed_runs_backup_that_cannot_go_back_is_kept_not_swept(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The output folder was recreated by hand after a run was killed between its renames: the old results
    cannot go back in its place, so their backup stays (named in a warning) and other runs carry on."""
    import json

    from DoseSegLib.io.output_swap import ORIGIN

    backup = tmp_path / f".out.old-{host_tag()}-{_dead_pid()}-abc"
    (backup / "old").mkdir(parents=True)
    (backup / "old" / "a.txt").write_text("the only copy")
    (backup / ORIGIN).write_text(json.dumps({"name": "out", "inside": False}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    for run in range(2):  # every later run into the same parent
        _results(tmp_path / f"other{run}")
    assert (backup / "old" / "a.txt").read_text() == "the only copy"
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert str(backup / "old") in caplog.text
