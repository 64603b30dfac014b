"""``doseseg run`` on a clinical-size patient: time and peak memory per step.

Builds once (cached in --cache, default a folder under the system's temporary folder) a fine
copy of an OpenKBP validation patient (Testing/clinical_copy.py): the CT resampled to
512 x 512 x 300 at 1.1 x 1.1 x 1.25 mm (cubic B-spline), each structure resampled onto that grid
(linear, kept >= 0.5) and cropped to its own bounding box, the possible-dose mask likewise, and the dose on a 2.5 mm grid of its own over the
possible-dose mask's box, as a treatment-planning system exports them. Then runs
``doseseg run`` on it in a fresh process (``--runs`` times) and prints the per-step seconds of
summary.json, the wall time and the peak resident memory of the run and its worker processes
(medians over the runs).
``--profile FILE`` also writes a cProfile of one run.

Usage: .venv/bin/python benchmarks/bench_clinical.py [--patient validation/pt_201] [--runs 3] [--cache DIR]
Targets on a 2-core CPU: run under 30 s and 3 GB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PEAK = "peak_rss_kb="  # printed by the child wrapper below: the process tree's resident memory, sampled


def fine_copy(patient: Path, target: Path) -> Path:
    """Write the clinical-size copy of ``patient`` into ``target`` (once) and return it."""
    sys.path.insert(0, str(REPO / "Testing"))
    from clinical_copy import clinical_copy, full_size_grid

    from DoseSegLib.io.patient import read_patient, write_patient

    if (target / "ct.nrrd").is_file():
        return target
    case = read_patient(patient)
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    write_patient(partial, clinical_copy(case, full_size_grid(case.ct)))
    partial.rename(target)
    return target


def run_once(patient: Path, profile: Path | None) -> tuple[float, float, dict[str, float]]:
    """Wall seconds, peak RSS (GB) and summary.json's per-step seconds of one ``doseseg run``."""
    wrapper = (
        "import os, resource, sys, runpy, threading, time\n"
        "def tree_rss():  # this process and its descendants (radiomics workers), resident bytes\n"
        "    parents = {}\n"
        "    for stat in os.listdir('/proc'):\n"
        "        if stat.isdigit():\n"
        "            try:\n"
        "                fields = open(f'/proc/{stat}/stat').read().rsplit(')', 1)[1].split()\n"
        "                parents[int(stat)] = (int(fields[1]), int(fields[21]) * os.sysconf('SC_PAGE_SIZE'))\n"
        "            except OSError:\n"
        "                pass\n"
        "    def mine(pid):\n"
        "        while pid > 1:\n"
        "            if pid == os.getpid():\n"
        "                return True\n"
        "            pid = parents.get(pid, (0, 0))[0]\n"
        "        return False\n"
        "    return sum(rss for pid, (_, rss) in parents.items() if mine(pid))\n"
        "peak = [0]\n"
        "def sample():\n"
        "    while True:\n"
        "        peak[0] = max(peak[0], tree_rss())\n"
        "        time.sleep(0.2)\n"
        "if __name__ == '__main__':  # not in the worker processes, which import this script again\n"
        "    threading.Thread(target=sample, daemon=True).start()\n"
        "    sys.argv = ['doseseg', *sys.argv[1:]]\n"
        "    try:\n"
        "        runpy.run_module('DoseSegLib.cli', run_name='__main__')\n"
        "    finally:\n"
        "        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB, exact for this process\n"
        f"        print('{PEAK}%d' % max(own, peak[0] // 1024), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        script = Path(tmp) / "doseseg_peak.py"
        script.write_text(wrapper)
        prefix = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), str(script)]
        start = time.perf_counter()
        done = subprocess.run([*prefix, "run", str(patient), "-o", str(out), "--device", "cpu"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"doseseg run failed:\n{done.stderr[-3000:]}")
        peak_kb = [int(line[len(PEAK):]) for line in done.stderr.splitlines() if line.startswith(PEAK)][-1]
        timings = json.loads((out / "summary.json").read_text())["timings_s"]
    return wall, peak_kb / 1024**2, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patient", default="validation/pt_201", help="patient folder under the OpenKBP data")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "doseseg_bench_clinical")
    parser.add_argument("--profile", type=Path, help="also write a cProfile of one extra run here")
    args = parser.parse_args()
    patient = DATA / args.patient
    if not patient.is_dir():
        raise SystemExit(f"benchmark needs the OpenKBP data at {patient}")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    fine = fine_copy(patient, args.cache / Path(args.patient).name)
    print(f"clinical copy {fine}: 512 x 512 x 300 at 1.1 x 1.1 x 1.25 mm ({time.perf_counter() - start:.0f} s to prepare)")
    runs = [run_once(fine, None) for _ in range(args.runs)]
    steps = {step: statistics.median(r[2][step] for r in runs) for step in runs[0][2]}
    for step, seconds in steps.items():
        print(f"  {step:<14} {seconds:7.2f} s")
    walls = [r[0] for r in runs]
    print(f"doseseg run (clinical size): median {statistics.median(walls):.1f} s wall over {args.runs} runs "
          f"(runs {', '.join(f'{w:.1f}' for w in walls)}), peak RSS {max(r[1] for r in runs):.2f} GB "
          f"(target 30 s, 3 GB); load average now {os.getloadavg()[0]:.1f}")
    if args.profile:
        run_once(fine, args.profile)
        print(f"cProfile written to {args.profile}")


if __name__ == "__main__":
    main()
