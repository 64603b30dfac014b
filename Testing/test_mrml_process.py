"""The DoseSeg module's background-process runner, with real subprocesses (no Qt, no Slicer needed)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DoseSeg"))

from DoseSegLogicLib import process as process_module
from DoseSegLogicLib.process import CliProcess, cliCommand, cliEnvironment

posix_only = pytest.mark.skipif(os.name == "nt", reason="process groups and /proc are POSIX")


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ")[-1].startswith("Z"))


def _until(condition, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_cli_command_runs_the_library_from_any_folder(tmp_path):
    command = cliCommand(["--version"])
    assert command[1:] == ["-m", "DoseSegLogicLib.stoppable_cli", "--version"]
    process = CliProcess(command, cwd=tmp_path, env=cliEnvironment()).start()
    assert process.wait() == 0
    assert "DoseSeg" in process.log
    assert cliEnvironment()["PYTHONPATH"].split(os.pathsep)[:2] == [str(REPO), str(REPO / "DoseSeg")]


def test_tqdm_progress_is_parsed_and_kept_out_of_the_log(tmp_path):
    command = _script(tmp_path, """
        import time
        from tqdm import tqdm
        print("reading patient")
        for _ in tqdm(range(4), desc="predict-dose", mininterval=0):
            time.sleep(0.02)
        print("wrote output")
    """)
    process = CliProcess(command).start()
    assert process.wait() == 0
    assert process.progress == 100.0
    assert process.lines == ["reading patient", "wrote output"]
    assert process.status == "wrote output"


def test_the_main_jobs_step_bar_reaches_the_runner_through_a_pipe(tmp_path):
    """Through a pipe (no terminal) the CLI draws its step bar only because cliEnvironment asks for it."""
    command = _script(tmp_path, """
        from DoseSegLib.run.steps import STEPS, Steps
        from DoseSegLib.cli.progress import progress_enabled
        steps = Steps("pt_1", progress_enabled())
        for name in STEPS:
            with steps(name):
                pass
        steps.close()
        print("done")
    """)
    env = cliEnvironment()
    assert env["DOSESEG_PROGRESS"] == "1"
    process = CliProcess(command, env=env).start()
    assert process.wait() == 0 and process.lines == ["done"]
    assert process.progress == 100.0 and process.status == "done"
    quiet = CliProcess(command, env={**env, "DOSESEG_PROGRESS": "0"}).start()
    assert quiet.wait() == 0 and quiet.progress is None


def test_failure_keeps_the_error_output(tmp_path):
    command = _script(tmp_path, """
        import sys
        print("doseseg: error: no model found", file=sys.stderr)
        sys.exit(1)
    """)
    process = CliProcess(command).start()
    assert process.wait() == 1
    assert process.lines == ["doseseg: error: no model found"]


@posix_only
def test_cancel_returns_at_once_and_kills_a_tree_that_ignores_it(tmp_path):
    """A command that ignores the stop request (here not the DoseSeg command) is killed, grandchildren
    included, by the timer after the grace period; cancel itself never waits."""
    command = _script(tmp_path, """
        import subprocess, sys, time
        from tqdm import tqdm
        grandchild = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"
        child = subprocess.Popen([sys.executable, "-c", grandchild])
        print(f"child {child.pid}", flush=True)
        bar = tqdm(total=10, desc="training", mininterval=0)
        bar.update(5)
        bar.refresh()
        time.sleep(120)
    """)
    process = CliProcess(command).start()
    assert _until(lambda: process.poll() is None and process.progress == 50.0 and process.lines)
    assert process.status == "training"
    child = int(process.lines[0].split()[1])
    assert _alive(child) and _alive(process.pid)

    started = time.monotonic()
    process.cancel(grace=1.0)
    assert time.monotonic() - started < 0.2, "cancel blocked the caller"
    assert process.cancelled and process.poll() is None, "still running during the grace period"
    assert _until(lambda: process.poll() is not None, timeout=10.0)
    assert process.poll() == -9, "killed by the timer"
    assert _until(lambda: not _alive(child), timeout=5.0), "the grandchild survived cancel"
    assert not _alive(process.pid)


FAKE_CLI = """
import sys, time
from pathlib import Path

def main(argv):
    out = Path(argv[0])
    (out / "partial").mkdir(parents=True)
    print("working", flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        (out / "partial").rmdir()
        (out / "cleaned up").write_text("yes")
        print("doseseg: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0
"""


def _fake_doseseg(tmp_path: Path) -> dict[str, str]:
    """An environment where ``DoseSegLib.cli.main`` is FAKE_CLI (run with cwd=tmp_path)."""
    library = tmp_path / "lib" / "DoseSegLib" / "cli"
    library.mkdir(parents=True)
    for init in (library.parent / "__init__.py", library / "__init__.py"):
        init.write_text("")
    (library / "main.py").write_text(FAKE_CLI)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "lib"), str(REPO / "DoseSeg")])}


def test_cancel_asks_the_command_to_stop_and_it_cleans_up(tmp_path):
    """Cancel reaches the DoseSeg command as Ctrl-C through its stdin, on every platform: its
    KeyboardInterrupt cleanup runs and it ends by itself, long before the kill timer."""
    env = _fake_doseseg(tmp_path)
    process = CliProcess(cliCommand([tmp_path / "out"]), cwd=tmp_path, env=env).start()
    assert _until(lambda: process.poll() is None and process.lines == ["working"])
    started = time.monotonic()
    process.cancel(grace=30.0)
    assert time.monotonic() - started < 0.2
    assert process.wait(interval=0.05) == 130 and time.monotonic() - started < 10
    assert (tmp_path / "out" / "cleaned up").is_file() and not (tmp_path / "out" / "partial").exists()
    assert process.lines[-1] == "doseseg: interrupted; no partial output was kept"


def test_cancel_works_when_ctrl_c_was_ignored_by_the_parent(tmp_path):
    """A Slicer (or a test run) started from a background shell passes Ctrl-C on as ignored: cancel still stops."""
    env = _fake_doseseg(tmp_path)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the command, as from `slicer &`
    try:
        process = CliProcess(cliCommand([tmp_path / "out"]), cwd=tmp_path, env=env).start()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _until(lambda: process.poll() is None and process.lines == ["working"])
    process.cancel(grace=30.0)
    assert process.wait(interval=0.05) == 130 and (tmp_path / "out" / "cleaned up").is_file()


def test_a_vanished_parent_stops_the_command(tmp_path):
    """stdin closing (Slicer quit or crashed) stops the command the same way: no orphan keeps running."""
    process = CliProcess(cliCommand(["--version"]), env=cliEnvironment()).start()
    assert process.wait() == 0  # a short command is unaffected
    env = _fake_doseseg(tmp_path)
    process = CliProcess(cliCommand([tmp_path / "out"]), cwd=tmp_path, env=env).start()
    assert _until(lambda: process.poll() is None and process.lines == ["working"]), process.log
    process._process.stdin.close()  # what the end of the parent does
    assert process.wait(interval=0.05) == 130 and (tmp_path / "out" / "cleaned up").is_file()


def test_windows_runs_it_without_a_console_window(monkeypatch):
    monkeypatch.setattr(process_module.os, "name", "nt")
    monkeypatch.setattr(process_module.subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)
    monkeypatch.setattr(process_module.subprocess, "CREATE_NO_WINDOW", 0x8000000, raising=False)
    assert process_module.processGroupOptions() == {"creationflags": 0x200 | 0x8000000}


def test_the_real_command_cancelled_mid_run_leaves_no_partial_output(tmp_path):
    """`doseseg demo` (the whole main job) cancelled once it is under way: Ctrl-C cleanup, exit 130, and neither
    the output folder nor a staging folder beside it remains."""
    pytest.importorskip("torch", reason="the demo runs the dose model")
    process = CliProcess(cliCommand(["demo", "-o", tmp_path / "out", "--device", "cpu"]), cwd=tmp_path,
                         env=cliEnvironment()).start()
    assert _until(lambda: process.poll() is not None or process.progress is not None, timeout=120.0), process.log
    assert process.poll() is None, f"the demo ended before it could be cancelled: {process.log}"
    process.cancel(grace=60.0)
    assert process.wait(interval=0.05) == 130, process.log
    assert "interrupted; no partial output was kept" in process.log
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "output or staging folder left behind"
