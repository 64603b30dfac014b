"""Run the DoseSegLib command line in a background process: start, poll output and progress, cancel.

Standard library only (no Qt, no Slicer), so the GUI drives it from a timer and
the console waits on it. The process gets its own process group (session), and no
console window on Windows. Cancel never blocks: it asks the command to stop through
its stdin (see :mod:`stoppable_cli`: the library's Ctrl-C cleanup runs), and a timer
kills the whole process group if it is still running after a grace period.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .dependencies import radiomicsFolder

TQDM_PROGRESS = re.compile(r"(?:(?P<description>[^\r\n|]*?):\s*)?(?P<percent>\d{1,3})%\|")
LINE_END = re.compile(r"\r\n|\r|\n")


def pythonExecutable() -> str:
    """Slicer's Python launcher (PythonSlicer) inside Slicer, the current interpreter elsewhere."""
    return shutil.which("PythonSlicer") or sys.executable


def cliCommand(args: Sequence[object], python: str | None = None) -> list[str]:
    """The command line running ``doseseg ARGS`` so that :meth:`CliProcess.cancel` can stop it cleanly."""
    return [python or pythonExecutable(), "-m", "DoseSegLogicLib.stoppable_cli", *map(str, args)]


def cliEnvironment() -> dict[str, str]:
    """This process's environment with DoseSegLib (and SlicerRadiomics' pyradiomics, when installed) importable,
    unbuffered UTF-8 output and progress bars."""
    spec = importlib.util.find_spec("DoseSegLib")
    if spec is None or spec.origin is None:
        raise RuntimeError("DoseSegLib is not importable: is the DoseSeg extension installed?")
    libraryParent = str(Path(spec.origin).resolve().parents[1])
    moduleParent = str(Path(__file__).resolve().parents[1])  # DoseSegLogicLib's (the same folder in Slicer)
    radiomics = radiomicsFolder()
    env = dict(os.environ)
    folders = dict.fromkeys([libraryParent, moduleParent, radiomics and str(radiomics), env.get("PYTHONPATH")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, folders))
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONUTF8"] = "1"  # names and paths in UTF-8 on every system (Windows' default code page garbles them)
    env["DOSESEG_PROGRESS"] = "1"  # progress bars on the pipe, parsed by CliProcess
    return env


class CliProcess:
    """One command in its own process group, its merged stdout/stderr read by a background thread.

    Attributes:
        progress: percent of the latest tqdm progress bar, None before any.
        status: the latest progress-bar description or output line.
        lines: the output lines so far (progress-bar redraws excluded).
        cancelled: True once :meth:`cancel` was called.
    """

    def __init__(self, command: Sequence[str], cwd: str | Path | None = None, env: dict[str, str] | None = None):
        self.command = list(command)
        self.cwd = cwd
        self.env = env
        self.progress: float | None = None
        self.status = ""
        self.lines: list[str] = []
        self.cancelled = False
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._pieces: queue.Queue = queue.Queue()
        self._killer: threading.Timer | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def start(self) -> CliProcess:
        """Start the command; returns at once."""
        self._process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **processGroupOptions(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        """Split the output into pieces ended by a newline or a carriage return (tqdm redraws)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        for chunk in iter(lambda: self._process.stdout.read1(4096), b""):
            pending += decoder.decode(chunk)
            *complete, pending = LINE_END.split(pending)
            for piece in complete:
                self._pieces.put(piece)
        pending += decoder.decode(b"", final=True)
        if pending:
            self._pieces.put(pending)

    def _take(self, piece: str) -> None:
        matches = list(TQDM_PROGRESS.finditer(piece))
        match = matches[-1] if matches else None  # the latest progress in the piece
        if match:
            self.progress = float(match.group("percent"))
            self.status = (match.group("description") or "").strip() or self.status
        elif piece.strip():
            self.lines.append(piece)
            self.status = piece.strip()

    def poll(self) -> int | None:
        """Take in the new output; the exit code once the process has ended, else None."""
        code = self._process.poll()
        if code is not None:
            self._reader.join(timeout=2.0)
        while True:
            try:
                self._take(self._pieces.get_nowait())
            except queue.Empty:
                return code

    def wait(self, interval: float = 0.2) -> int:
        """Block until the process ends; its exit code."""
        while (code := self.poll()) is None:
            time.sleep(interval)
        return code

    def cancel(self, grace: float = 10.0) -> None:
        """Ask the command to stop (a line on its stdin) and return at once; kill what is left after ``grace`` s."""
        if self._process is None or self.cancelled:
            return
        self.cancelled = True
        try:
            self._process.stdin.write(b"stop\n")
            self._process.stdin.close()
        except OSError:  # it has already ended
            pass
        self._killer = threading.Timer(grace, self.kill)
        self._killer.daemon = True
        self._killer.start()

    def kill(self) -> None:
        """Kill the process and every process it started, now (a no-op once it has ended)."""
        if self._process is None or self._process.poll() is not None:
            return
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], capture_output=True,
                           check=False, **processGroupOptions())
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)


def processGroupOptions() -> dict:
    """Popen options: a process group of its own and, on Windows, no console window."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}
