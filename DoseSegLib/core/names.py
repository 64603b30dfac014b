"""Structure names: map clinical aliases (incl. AAPM TG-263) onto DoseSeg's canonical names."""

from __future__ import annotations

import json
import re
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError

_ALIASES = {
    "Brainstem": ["brainstem", "brain_stem", "stem"],
    "SpinalCord": ["spinalcord", "spinal_cord", "cord", "spinalcanal"],
    "RightParotid": ["rightparotid", "parotid_r", "parotidr", "rparotid", "rt_parotid", "parotid_right",
                     "glnd_parotid_r", "r_parotid"],
    "LeftParotid": ["leftparotid", "parotid_l", "parotidl", "lparotid", "lt_parotid", "parotid_left",
                    "glnd_parotid_l", "l_parotid"],
    "Esophagus": ["esophagus", "oesophagus", "esophagus_s"],
    "Larynx": ["larynx", "larynx_g", "glottis"],
    "Mandible": ["mandible", "bone_mandible", "jaw"],
}
_PTV = re.compile(r"^ptv[_ \-]?(\d+(?:[.p]\d+)?)(?:gy)?$")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


DEFAULT_ALIASES: dict[str, str] = {
    _key(alias): canonical for canonical, aliases in _ALIASES.items() for alias in aliases
}


class NameMapper:
    """Maps structure names to canonical ones; unknown names are returned unchanged.

    Args:
        extra: additional ``{alias: canonical}`` pairs, taking precedence over the defaults.
    """

    def __init__(self, extra: dict[str, str] | None = None) -> None:
        self.aliases = dict(DEFAULT_ALIASES)
        self.aliases.update({_key(k): v for k, v in (extra or {}).items()})

    @classmethod
    def from_json(cls, path: str | Path) -> NameMapper:
        """Load extra aliases from a JSON object ``{"alias": "CanonicalName", ...}``."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DoseSegError(f"{path}: cannot read name mapping ({exc})") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DoseSegError(f"{path}: name mapping must be a JSON object of strings")
        return cls(data)

    def canonical(self, name: str) -> str:
        key = _key(name)
        if key in self.aliases:
            return self.aliases[key]
        match = _PTV.match(name.lower().strip())
        if match:
            level = float(match.group(1).replace("p", "."))
            return f"PTV{level:g}"
        return name
