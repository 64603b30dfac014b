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
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps {elapsed}")

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.bar.set_description(f"{self.patient} {name}")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
