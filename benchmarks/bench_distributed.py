"""Time per training epoch of ``train-dose`` with 1 and 2 processes under torchrun, and the data-loading share.

Usage: .venv/bin/python benchmarks/bench_distributed.py [--procs 1 2] [--patients 8] [--batch-size 4]
       [--device cpu|cuda] [--synthetic]

Each setting trains the default dose network from scratch for ``--epochs`` epochs on the
first ``--patients`` OpenKBP training patients (``--synthetic``: phantoms, when the data is
absent) with one global batch size; validation runs only after the last epoch, which is
left out of the figures. Per setting it prints the mean seconds per training epoch (from
log.csv), the images per second and the share of the epoch each rank spent preparing its
patches (cache read, cropping, augmentation: the data loading) rather than in the network.
The patient cache is built once, before the first setting, and not timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from common import DATA, machine

HERE = Path(__file__).resolve()


def worker(args: argparse.Namespace) -> None:
    """One rank: train with the patch preparation timed per epoch; write the timings."""
    import torch

    from DoseSegLib.models.common import distributed
    from DoseSegLib.models.dose import training
    from DoseSegLib.models.dose.augment import DoseAugmentation
    from DoseSegLib.models.dose.net import DoseNetConfig

    prep, epoch_now = defaultdict(float), [0]

    def timed(function):
        def run(*a, **k):
            start = time.perf_counter()
            result = function(*a, **k)
            prep[epoch_now[0]] += time.perf_counter() - start
            return result
        return run

    make_step = training._step

    def step_of_epoch(net, samples, config, epoch, device):
        epoch_now[0] = epoch
        return make_step(net, samples, config, epoch, device)

    training._step = step_of_epoch
    training.random_patch = timed(training.random_patch)
    DoseAugmentation.__call__ = timed(DoseAugmentation.__call__)
    config = training.TrainConfig(epochs=args.epochs, val_every=10_000, batch_size=args.batch_size,
                                  max_train_patients=args.patients, max_val_patients=2, net=DoseNetConfig())
    training.train_dose(args.data, args.out, config, cache=args.cache, device=torch.device(args.device))
    report = {"rank": distributed.rank(), "prep_seconds": dict(prep)}
    (args.out.parent / f"{args.out.name}.rank{distributed.rank()}.json").write_text(json.dumps(report))


def synthetic_data(folder: Path, patients: int) -> Path:
    from DoseSegLib.io.phantom import write_phantom_patient

    for split, count in (("train", patients), ("validation", 2)):
        for i in range(count):
            write_phantom_patient(folder / split / f"pt_{i}", shape=(128, 128, 96), seed=i)
    return folder


def launch(args: argparse.Namespace, procs: int, data: Path, cache: Path, out: Path) -> float:
    """Run one setting under torchrun; returns its wall time."""
    threads = max(1, (os.cpu_count() or 1) // procs) if args.device == "cpu" else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE.parent)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               str(HERE), "--worker", "--data", str(data), "--out", str(out), "--cache", str(cache),
               "--epochs", str(args.epochs), "--patients", str(args.patients),
               "--batch-size", str(args.batch_size), "--device", args.device]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{procs} processes failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def summarise(out: Path, procs: int, patients: int, wall: float) -> str:
    with (out / "log.csv").open() as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)][:-1]  # the last one validated
    prep = [json.loads((out.parent / f"{out.name}.rank{r}.json").read_text())["prep_seconds"] for r in range(procs)]
    share = [sum(p.get(str(e), 0.0) for e in range(1, len(seconds) + 1)) / sum(seconds) for p in prep]
    mean = sum(seconds) / len(seconds)
    return (f"{procs} process{'es' if procs > 1 else ''}: {mean:.1f} s per epoch "
            f"({', '.join(f'{s:.1f}' for s in seconds)}), {patients / mean:.2f} patients/s, "
            f"data loading {100 * max(share):.0f}% of the epoch (max over ranks), wall {wall:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, nargs="+", default=(1, 2, 1, 2), help="process counts, in turn")
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4, help="the global batch (the same in every setting)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--synthetic", action="store_true", help="phantoms instead of the OpenKBP data")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        root = Path(tmp)
        if args.synthetic:
            data = synthetic_data(root / "data", args.patients)
        elif DATA.is_dir():
            data = DATA
        else:
            raise SystemExit(f"benchmark needs the OpenKBP data at {DATA} (or --synthetic)")
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
        print(f"train-dose, default network, patch 96x64x80, {args.patients} patients ({data.name}), "
              f"global batch {args.batch_size}, device {args.device}")
        from DoseSegLib.io.listing import patient_folders
        from DoseSegLib.models.dose.cache import build_cache

        start = time.perf_counter()
        build_cache(patient_folders(data / "train", args.patients) + patient_folders(data / "validation", 2),
                    root / "cache")
        print(f"patient cache (once, untimed below): {time.perf_counter() - start:.0f} s")
        for i, procs in enumerate(args.procs):
            out = root / f"run{i}-{procs}"
            wall = launch(args, procs, data, root / "cache", out)
            print(summarise(out, procs, args.patients, wall), flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
