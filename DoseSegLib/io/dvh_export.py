"""Cumulative DVH tables exported by SlicerRT (and Eclipse or CERR DVHs saved in its layout).

Column pairs ``<Name> Dose (Gy)``, ``<Name> Value (% of <V> cc)`` (a ``_DvhArray`` suffix on
the name is dropped), one row per dose point; a trailing empty column is ignored.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from DoseSegLib.core.errors import DoseSegError

DOSE_HEADER = re.compile(r"^(?P<name>.+?)(?:_DvhArray)? Dose \((?:Gy|GY|cGy)\)$")
VALUE_HEADER = re.compile(r"^(?P<name>.+?)(?:_DvhArray)? Value \(% of (?P<volume>[\d.]+) cc\)$")


@dataclass
class ExportedDVH:
    """One structure's cumulative DVH as exported: dose points (Gy), volume (%) and total volume (cc)."""

    dose_gy: np.ndarray
    volume_pct: np.ndarray
    volume_cc: float


def read_dvh_export(path: str | Path) -> dict[str, ExportedDVH]:
    """Every structure's cumulative DVH in an exported DVH table, by the name it has there."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DoseSegError(f"{path}: cannot read the DVH table ({exc})") from exc
    header = [h.strip() for h in rows[0]] if rows else []
    while header and not header[-1]:
        header.pop()
    if not header or len(header) % 2:
        raise DoseSegError(f"{path}: expected column pairs '<Name> Dose (Gy)', '<Name> Value (% of V cc)'")
    curves = {}
    for column in range(0, len(header), 2):
        dose, value = DOSE_HEADER.match(header[column]), VALUE_HEADER.match(header[column + 1])
        if not (dose and value and dose["name"] == value["name"]):
            raise DoseSegError(f"{path}: columns '{header[column]}', '{header[column + 1]}' are not a DVH pair")
        points = [(r[column], r[column + 1]) for r in rows[1:] if len(r) > column + 1 and r[column] and r[column + 1]]
        values = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        scale = 0.01 if "cGy" in header[column] else 1.0
        curves[dose["name"]] = ExportedDVH(values[:, 0] * scale, values[:, 1], float(value["volume"]))
    return curves


def curve_dose_at_pct(dvh: ExportedDVH, percent: float) -> float:
    """Dx% read off a cumulative curve: the dose where the volume first falls to ``percent``, interpolated."""
    below = np.flatnonzero(dvh.volume_pct <= percent)
    if below.size == 0:
        return float(dvh.dose_gy[-1])
    i = int(below[0])
    if i == 0:
        return float(dvh.dose_gy[0])
    v0, v1 = dvh.volume_pct[i - 1], dvh.volume_pct[i]
    d0, d1 = dvh.dose_gy[i - 1], dvh.dose_gy[i]
    return float(d0 + (d1 - d0) * (v0 - percent) / (v0 - v1)) if v0 > v1 else float(d1)


def curve_mean_dose(dvh: ExportedDVH) -> float:
    """Mean dose of a cumulative curve: the area under it (trapezoids) over 100 %, from 0 Gy."""
    dose = np.concatenate([[0.0], dvh.dose_gy]) if dvh.dose_gy[0] > 0 else dvh.dose_gy
    pct = np.concatenate([[100.0], dvh.volume_pct]) if dvh.dose_gy[0] > 0 else dvh.volume_pct
    return float(np.sum((pct[1:] + pct[:-1]) / 2 * np.diff(dose)) / 100)


def match_key(name: str) -> str:
    """A structure name reduced for matching across systems (``Femoral_Head_Lt`` = ``Femoral Head Lt``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())
