"""The treatment site the models know: head and neck (OpenKBP). Other sites are refused by the
model commands unless the user overrides the check (recorded in the outputs)."""

from __future__ import annotations

from collections.abc import Collection

from DoseSegLib.core.case import OARS, Case, is_ptv
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import DEFAULT_ALIASES

NOT_AN_ORGAN = {"Body"}
HEAD_NECK = (set(DEFAULT_ALIASES.values()) | set(OARS)) - NOT_AN_ORGAN
OVERRIDE = "--any-site"


def site_problem(case: Case, organs: Collection[str] | None = None, site: str = "") -> str | None:
    """Why ``case`` does not look like a patient of the models' site (None when it does, or cannot be told).

    It does not when it has organs by name and none of them is one of ``organs`` (a clinic
    model's site organs), by default the head-and-neck organs of DoseSeg's names table
    (``data/structure_names.csv``); targets and the body tell nothing.
    """
    known = HEAD_NECK if organs is None else set(organs)
    found = [n for n in case.structures if not is_ptv(n) and n not in NOT_AN_ORGAN]
    if not found or any(n in known for n in found):
        return None
    shown = ", ".join(found[:8]) + (" ..." if len(found) > 8 else "")
    return f"no {site or 'head-and-neck'} organ among its structures ({shown})"


def check_site(case: Case, any_site: bool = False, organs: Collection[str] | None = None,
               site: str = "") -> str | None:
    """Refuse a patient of another site, or with ``any_site`` return the note to record in the outputs.

    Args:
        organs, site: a clinic model's organs and site name (None, '': the bundled head-and-neck models).
    """
    problem = site_problem(case, organs, site)
    if problem is None:
        return None
    trained = site or "head and neck"
    if not any_site:
        known = f"{site} anatomy only (the model's own cohort)" if site else "head-and-neck anatomy only (OpenKBP)"
        raise DoseSegError(f"patient '{case.name}': {problem}; the models know {known}. DVH, goals and "
                           f"evaluation work for any site; to run the models anyway, pass {OVERRIDE}")
    return f"site check overridden ({OVERRIDE}): {problem}; the models were trained on {trained} only"
