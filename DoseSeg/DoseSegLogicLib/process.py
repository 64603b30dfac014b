"""Run the DoseSegLib command line in a background process: start, poll output and progress, cancel.

Standard library only (no Qt, no Slicer), so the GUI drives it from a timer and
the console waits on it. The process gets its own process group (session), so
cancelling stops it together with every process it started.
"""

from __future__ import annotations

import codecs
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
    """The command line running ``python -m DoseSegLib.cli ARGS``."""
    return [python or pythonExecutable(), "-m", "DoseSegLib.cli", *map(str, args)]


def cliEnvironment() -> dict[str, str]:
    """This process's environment with DoseSegLib (and SlicerRadiomics' pyradiomics, when installed) importable,
    unbuffered output and progress bars."""
    spec = importlib.util.find_spec("DoseSegLib")
    if spec is None or spec.origin is None:
        raise RuntimeError("DoseSegLib is not importable: is the DoseSeg extension installed?")
    libraryParent = str(Path(spec.origin).resolve().parents[1])
    radiomics = radiomicsFolder()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [libraryParent, radiomics and str(radiomics),
                                                      env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
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

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def start(self) -> CliProcess:
        """Start the command; returns at once."""
        if os.name == "nt":
            group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            group = {"start_new_session": True}
        self._process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **group,
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
        match = None
        for match in TQDM_PROGRESS.finditer(piece):
            pass
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

    def cancel(self, grace: float = 5.0) -> None:
        """Interrupt the whole process group (Ctrl-C, so the CLI cleans up); kill what is left after ``grace`` s."""
        if self._process is None:
            return
        self.cancelled = True
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._process.pid)], capture_output=True)
        else:
            for sig, timeout in ((signal.SIGINT, grace), (signal.SIGKILL, None)):
                try:
                    os.killpg(self._process.pid, sig)
                    self._process.wait(timeout=timeout)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        self._process.wait()
