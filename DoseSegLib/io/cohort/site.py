"""The site config of a cohort (site.json): which organs and target levels its models know.

``doseseg build-cohort`` writes it; ``train-dose`` and ``train-seg`` read it from ``--data`` and
record it in the run's config.json and weights, so that a model carries the structures it
was trained with. A dataset without site.json (the OpenKBP copy) is the head-and-neck default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from DoseSegLib.core.case import OARS
from DoseSegLib.core.errors import DoseSegError

SITE_FILE = "site.json"


@dataclass
class SiteConfig:
    """A cohort's site: its name, its organs at risk (network channel order) and its prescription levels.

    Attributes:
        cohort: a summary of how the cohort was built (counts, split, command), for model cards.
    """

    site: str
    oars: tuple[str, ...]
    target_levels: tuple[float, ...] = ()
    cohort: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "oars": list(self.oars), "target_levels": list(self.target_levels)}

    @classmethod
    def from_dict(cls, data: dict) -> SiteConfig:
        try:
            oars = tuple(str(name) for name in data["oars"])
            return cls(str(data["site"]), oars, tuple(float(v) for v in data.get("target_levels", ())),
                       dict(data.get("cohort", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise DoseSegError(f"site config without a valid {exc}") from exc


OPENKBP = SiteConfig("head and neck (OpenKBP)", OARS, (56.0, 63.0, 70.0))


def read_site(data: Path) -> SiteConfig | None:
    """The site config of a dataset folder (``data/site.json``), None when it has none."""
    path = Path(data) / SITE_FILE
    if not path.is_file():
        return None
    try:
        site = SiteConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, DoseSegError) as exc:
        raise DoseSegError(f"{path}: not a DoseSeg site config ({exc})") from exc
    if not site.oars:
        raise DoseSegError(f"{path}: the site config lists no organ; rebuild the cohort with --structures")
    return site


def write_site(folder: Path, site: SiteConfig) -> Path:
    path = Path(folder) / SITE_FILE
    path.write_text(json.dumps(site.to_dict(), indent=2) + "\n")
    return path
