"""The one name of each DVH metric, used inside the code and as the column of every output table."""

from __future__ import annotations

VOLUME = "volume_cc"
MEAN = "Dmean"
MIN = "Dmin"
MAX = "Dmax"


def dose_at_pct(percent: float) -> str:
    """Dx%: minimum dose to the hottest ``percent`` % of the structure."""
    return f"D{percent:g}"


def dose_at_cc(volume_cc: float) -> str:
    """Dx cc: minimum dose to the hottest ``volume_cc`` cm^3 of the structure."""
    return f"D{volume_cc:g}cc"


def volume_at_dose(dose_gy: float) -> tuple[str, str]:
    """V x Gy: volume receiving at least ``dose_gy``, in % of the structure and in cm^3."""
    return f"V{dose_gy:g}Gy_pct", f"V{dose_gy:g}Gy_cc"
