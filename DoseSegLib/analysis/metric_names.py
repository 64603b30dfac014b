"""The one name of each DVH metric (AAPM TG-263 nomenclature), used inside the code and as the
column of every output table: ``Volume[cc]``, ``Mean[Gy]``, ``Min[Gy]``, ``Max[Gy]``,
``D95%[Gy]``, ``D0.03cc[Gy]``, ``V20Gy[%]``, ``V20Gy[cc]``.

``canonical_metric`` also reads the names of older constraint tables (``Dmean``, ``D95``,
``D0.1cc``, ``V30Gy``).
"""

from __future__ import annotations

import re

VOLUME = "Volume[cc]"
MEAN = "Mean[Gy]"
MIN = "Min[Gy]"
MAX = "Max[Gy]"
NUMBER = r"(\d+(?:\.\d+)?)"
_DOSE_PCT = re.compile(rf"^D{NUMBER}%?(?:\[(Gy|%)\])?$")
_DOSE_CC = re.compile(rf"^D{NUMBER}cc(?:\[(Gy|%)\])?$")
_VOLUME = re.compile(rf"^V{NUMBER}Gy(?:\[(%|cc)\])?$")
_STATS = {"mean": MEAN, "dmean": MEAN, "min": MIN, "dmin": MIN, "max": MAX, "dmax": MAX}
_STAT = re.compile(r"^(D?(?:mean|min|max))(?:\[(Gy|%)\])?$", re.IGNORECASE)
UNIT_OF_BRACKET = {"Gy": "Gy", "%": "pct_rx"}


def dose_at_pct(percent: float) -> str:
    """Dx%: minimum dose to the hottest ``percent`` % of the structure."""
    return f"D{percent:g}%[Gy]"


def dose_at_cc(volume_cc: float) -> str:
    """Dx cc: minimum dose to the hottest ``volume_cc`` cm^3 of the structure."""
    return f"D{volume_cc:g}cc[Gy]"


def volume_at_dose(dose_gy: float) -> tuple[str, str]:
    """V x Gy: volume receiving at least ``dose_gy``, in % of the structure and in cm^3."""
    return f"V{dose_gy:g}Gy[%]", f"V{dose_gy:g}Gy[cc]"


def volume_dose(name: str) -> float | None:
    """x of a ``VxGy[...]`` metric name, else None."""
    match = _VOLUME.match(name)
    return float(match.group(1)) if match else None


def canonical_metric(text: str, unit: str = "") -> tuple[str, str]:
    """The TG-263 name of a goal's metric and the goal's unit, from new or old names.

    Args:
        text: ``Mean[Gy]``, ``D95%[Gy]``, ``D95%[%]``, ``D0.1cc[Gy]``, ``V30Gy[%]``, ``V30Gy[cc]``,
            or the older ``Dmean``, ``Dmin``, ``Dmax``, ``D95``, ``D0.1cc``, ``V30Gy``.
        unit: the goal's unit column: Gy or pct_rx for doses, pct or cc for volumes; may be
            empty when the name's bracket says it.

    Raises:
        ValueError: an unknown metric, or a unit that contradicts the name.
    """
    text = text.strip()
    stat, volume = _STAT.match(text), _VOLUME.match(text)
    dose_pct, dose_cc = _DOSE_PCT.match(text), _DOSE_CC.match(text)
    if volume:
        x, bracket = float(volume.group(1)), volume.group(2)
        implied = {"%": "pct", "cc": "cc"}.get(bracket or "", "")
        unit = _agree(text, unit or implied, implied, ("pct", "cc"))
        pct_name, cc_name = volume_at_dose(x)
        return (pct_name if unit == "pct" else cc_name), unit
    if stat:
        name, bracket = _STATS[stat.group(1).lower()], stat.group(2)
    elif dose_cc:
        name, bracket = dose_at_cc(float(dose_cc.group(1))), dose_cc.group(2)
    elif dose_pct:
        if not 0 <= float(dose_pct.group(1)) <= 100:
            raise ValueError(f"metric '{text}': a dose to x % of the volume needs x from 0 to 100")
        name, bracket = dose_at_pct(float(dose_pct.group(1))), dose_pct.group(2)
    else:
        raise ValueError(f"unknown metric '{text}' (Mean[Gy], Max[Gy], D95%[Gy], D0.03cc[Gy], V20Gy[%], "
                         "V20Gy[cc], or the older Dmean, D95, D0.1cc, V20Gy)")
    implied = UNIT_OF_BRACKET.get(bracket or "", "")
    return name, _agree(text, unit or implied or "Gy", implied if bracket == "%" else "", ("Gy", "pct_rx"))


def _agree(text: str, unit: str, implied: str, allowed: tuple[str, ...]) -> str:
    if unit not in allowed:
        raise ValueError(f"unit of {text} must be one of {', '.join(allowed)}, not '{unit}'")
    if implied and unit != implied:
        raise ValueError(f"unit '{unit}' contradicts the metric name {text}")
    return unit

