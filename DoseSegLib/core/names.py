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


_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_FILENAME = 80


def _digest(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def safe_filename(name: str) -> str:
    """A structure name as a plain file-name stem: never a path, never hidden, bounded length.

    Separators, control characters and characters Windows refuses become ``_``; leading
    dots and spaces are dropped (no ``..``, no hidden files); reserved device names get a
    ``_`` prefix; a name that had to be changed or shortened ends with ``~`` and 8 hex
    digits of its sha256, so that two distinct names never share a file.
    """
    stem = _UNSAFE.sub("_", name).lstrip(". ").rstrip(". ")
    if stem.split(".")[0].lower() in _RESERVED:
        stem = f"_{stem}"
    if stem and stem == name and len(stem) <= MAX_FILENAME and "~" not in stem:
        return stem
    return f"{stem[:MAX_FILENAME - 9] or 'structure'}~{_digest(name)}"


def structure_filenames(names: list[str] | tuple[str, ...] | dict) -> dict[str, str]:
    """``{name: "<safe stem>.nrrd"}`` for every name; refuses names whose files would collide.

    Distinct names get distinct files, also on case-insensitive file systems (macOS, Windows).
    """
    files: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        file = f"{safe_filename(name)}.nrrd"
        if file.lower() in seen:
            file = f"{safe_filename(name)[:MAX_FILENAME - 9]}~{_digest(name)}.nrrd"
        if file.lower() in seen:
            raise DoseSegError(f"structures '{seen[file.lower()]}' and '{name}' would share the file {file}")
        seen[file.lower()] = name
        files[name] = file
    return files
