"""The DoseSeg module's background-process runner, with real subprocesses (no Qt, no Slicer needed)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DoseSeg"))

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
    assert command[1:] == ["-m", "DoseSegLib.cli", "--version"]
    process = CliProcess(command, cwd=tmp_path, env=cliEnvironment()).start()
    assert process.wait() == 0
    assert "DoseSeg" in process.log
    assert cliEnvironment()["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)


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
        from DoseSegLib.run.pipeline import STEPS, _Steps
        from DoseSegLib.cli.progress import progress_enabled
        steps = _Steps("pt_1", progress_enabled())
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
def test_cancel_kills_the_whole_process_tree(tmp_path):
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
    process.cancel(grace=0.5)
    assert time.monotonic() - started < 10
    assert process.cancelled
    assert process.poll() not in (None, 0)
    assert _until(lambda: not _alive(child), timeout=5.0), "the grandchild survived cancel"
    assert not _alive(process.pid)
