"""Timing and progress of the main job's steps for one patient."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence

# radiomics starts after "segment" and runs beside the next steps: its time is what is left to wait for
ANALYSIS_STEPS = ("read", "align", "segment", "predict dose", "DVH and goals", "compare", "radiomics")
OUTPUT_STEPS = ("report", "write")  # only when the results are written to a folder
STEPS = ANALYSIS_STEPS + OUTPUT_STEPS


class Steps:
    """Times each step of one patient and advances a progress bar (stderr) through them."""

    def __init__(self, patient: str, progress: bool, steps: Sequence[str] = STEPS) -> None:
        from tqdm import tqdm

        self.timings: dict[str, float] = {}
        self.patient = patient
        self.bar = tqdm(total=len(steps), desc=patient, unit="step", file=sys.stderr, leave=False, mininterval=0,
                        disable=not progress,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps {elapsed}<{remaining}")

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.set_description(f"{self.patient} {name}")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


class CohortProgress:
    """Per-patient progress of a cohort on stderr: a bar with the time left on a terminal (``bar``), one
    line per patient with the time left otherwise (``lines``, for logs: no bar drawing), or nothing."""

    def __init__(self, total: int, bar: bool, lines: bool) -> None:
        from tqdm import tqdm

        self.total, self.lines, self.done, self.start = total, lines, 0, time.perf_counter()
        self.bar = tqdm(total=total, desc="cohort", unit="patient", file=sys.stderr, disable=not bar)

    def patient_done(self, name: str, status: str) -> None:
        self.done += 1
        self.bar.update()
        if self.lines:
            elapsed = time.perf_counter() - self.start
            left = elapsed / self.done * (self.total - self.done)
            print(f"doseseg: [{self.done}/{self.total}] {name} {status} ({elapsed:.0f} s so far, "
                  f"about {_duration(left)} left)", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
