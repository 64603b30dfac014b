"""The body mask a CT without a possible-dose mask gets (``core.alignment.body_mask``) at clinical size.

Usage: .venv/bin/python benchmarks/bench_body_mask.py [--shape 512 512 200] [--runs 5]

A 512 x 512 x 200 CT (0.98 x 0.98 x 2.5 mm, Fortran order as a Slicer volume arrives) whose body is an
elliptic cylinder with a lung in its upper half, plus the same with 150 HU of noise (many small
components outside the body). Prints the median seconds and the machine's load average.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import machine, median_seconds

from DoseSegLib.core.alignment import body_mask
from DoseSegLib.core.volume import Volume


def clinical_ct(shape: tuple[int, int, int], noise_hu: float) -> Volume:
    spacing = (0.98, 0.98, 2.5)
    origin = tuple(-s * (n - 1) / 2 for s, n in zip(spacing, shape, strict=True))
    x = (origin[0] + spacing[0] * np.arange(shape[0]))[:, None]
    y = (origin[1] + spacing[1] * np.arange(shape[1]))[None, :]
    hu = np.full(shape, -1000, dtype=np.int16, order="F")
    hu[(x / 180.0) ** 2 + (y / 120.0) ** 2 <= 1.0] = 40
    lung = ((x - 60.0) / 50.0) ** 2 + (y / 70.0) ** 2 <= 1.0
    hu[:, :, shape[2] // 2:][lung] = -800
    if noise_hu:
        hu += np.random.default_rng(0).normal(0, noise_hu, shape).astype(np.int16)
    return Volume(hu, spacing, origin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(machine(), f"load average {os.getloadavg()[0]:.1f}")
    for noise in (0.0, 150.0):
        ct = clinical_ct(tuple(args.shape), noise)
        seconds = median_seconds(lambda ct=ct: body_mask(ct), args.runs)
        print(f"{' x '.join(map(str, args.shape))}, noise {noise:g} HU: body_mask {seconds:.2f} s "
              f"(median of {args.runs})")


if __name__ == "__main__":
    main()
