"""One step of the module as a background job: inputs written in a worker thread, the command run, results loaded.

Qt-free: the GUI polls a job from a timer, the console waits on it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError

from .process import CliProcess, cliCommand, cliEnvironment


class DoseSegJobError(DoseSegError):
    """A failed step; ``log`` holds the command's output for the error dialog."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


ERROR_WORDS = ("error", "failed", "refused", "give it", "cannot", "not found")


def headline(lines: list[str], folder: Path, code: int | None = None) -> str:
    """The most telling line of a failed command's output for an error dialog's headline: the last line that
    names an error (else the last line), without the job's temporary folder (the detailed log keeps it)."""
    def tidy(line: str) -> str:
        return line.replace(str(folder) + os.sep, "").replace(str(folder), "").strip()

    tidied = [tidy(line) for line in lines]
    telling = [line for line in tidied if any(word in line.lower() for word in ERROR_WORDS)]
    return next(iter((telling or tidied)[-1:]), "") or f"exit code {code}"


class DoseSegJob:
    """One command-line step: inputs written and the command run in the background, then results loaded.

    Args:
        title: what the step does, for messages.
        writeInputs: writes the input files into the given folder and returns the CLI arguments
            (``-o`` and the output folder are added); runs in a worker thread, so it must not touch the scene.
        finish: loads the results from the output folder into the scene (main thread); with ``read``, it
            receives what ``read`` returned instead of the folder.
        output: the command's output folder, kept afterwards; a temporary one removed with the inputs when None.
        read: reads the output files (e.g. a clinical-size dose) in a worker thread once the command has
            succeeded, so that the main thread only makes nodes; it must not touch the scene.
    """

    def __init__(self, title: str, writeInputs: Callable[[Path], list], finish: Callable[[object], object],
                 output: Path | None = None, read: Callable[[Path], object] | None = None) -> None:
        self.title = title
        self.folder = Path(tempfile.mkdtemp(prefix="DoseSeg-"))
        self.output = Path(output) if output is not None else self.folder / "output"
        self.process: CliProcess | None = None
        self.result = None
        self.done = False
        self.cancelled = False
        self._writeInputs = writeInputs
        self._finish = finish
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self._writer = threading.Thread(target=self._launch, daemon=True)
        self._read = read
        self._reader: threading.Thread | None = None
        self._loaded: object = None
        self._readError: Exception | None = None

    @property
    def progress(self) -> float | None:
        """Percent done of the command's progress bar, None while unknown."""
        return self.process.progress if self.process else None

    @property
    def status(self) -> str:
        return self.process.status if self.process else "writing inputs"

    @property
    def log(self) -> str:
        return self.process.log if self.process else ""

    def start(self) -> DoseSegJob:
        self._writer.start()
        return self

    def _launch(self) -> None:
        try:
            args = [*self._writeInputs(self.folder), "-o", self.output]
            with self._lock:
                if not self.cancelled:
                    self.process = CliProcess(cliCommand(args), self.folder, cliEnvironment()).start()
        except Exception as exc:  # shown by poll() in the main thread
            self._error = exc

    def _readOutputs(self) -> None:
        try:
            self._loaded = self._read(self.output)
        except Exception as exc:  # shown by poll() in the main thread
            self._readError = exc

    def _reading(self) -> bool:
        """True while the outputs are being read in the worker thread (started here once the command succeeded)."""
        if self._read is None or self._error is not None or self.cancelled or self.process is None \
                or self.process.poll() != 0:
            return False
        if self._reader is None:
            self._reader = threading.Thread(target=self._readOutputs, daemon=True)
            self._reader.start()
        return self._reader.is_alive()

    def poll(self) -> bool:
        """Advance the job; True once it is over (results loaded or cancelled). Raises DoseSegJobError on failure."""
        if self.done:
            return True
        if self._writer.is_alive() or (self.process and self.process.poll() is None):
            return False  # a cancelled command is cleaning up (or about to be killed): wait for it
        if self._reading():
            return False
        try:
            if self._error is not None:
                raise DoseSegJobError(f"{self.title}: cannot start ({self._error})", self.log) from self._error
            if not self.cancelled:
                code = self.process.poll()
                if code != 0:
                    raise DoseSegJobError(f"{self.title} failed: {headline(self.process.lines, self.folder, code)}",
                                          self.log)
                if self._readError is not None:
                    raise DoseSegJobError(f"{self.title}: cannot read the results ({self._readError})",
                                          self.log) from self._readError
                self.result = self._finish(self._loaded if self._read is not None else self.output)
        finally:
            self.done = True
            shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def wait(self, interval: float = 0.2):
        """Block until the job is over; its result (None when cancelled)."""
        while not self.poll():
            time.sleep(interval)
        return self.result

    def cancel(self) -> None:
        """Ask the step to stop, at once (see :meth:`CliProcess.cancel`); nothing is loaded into the scene.

        :meth:`poll` turns True once the command has ended (cleaned up, or killed after the grace period).
        """
        with self._lock:
            self.cancelled = True
            process = self.process
        if process is not None:
            process.cancel()
