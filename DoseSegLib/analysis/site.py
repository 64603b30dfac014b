"""The treatment site the models know: head and neck (OpenKBP). Other sites are refused by the
model commands unless the user overrides the check (recorded in the outputs)."""

from __future__ import annotations

from DoseSegLib.core.case import OARS, Case, is_target
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import DEFAULT_ALIASES

NOT_AN_ORGAN = {"Body"}
HEAD_NECK = (set(DEFAULT_ALIASES.values()) | set(OARS)) - NOT_AN_ORGAN
OVERRIDE = "--any-site"


def site_problem(case: Case) -> str | None:
    """Why ``case`` does not look like a head-and-neck patient (None when it does, or cannot be told).

    It does not when it has organs by name and none of them is a head-and-neck organ of
    DoseSeg's names table (``data/structure_names.csv``); targets and the body tell nothing.
    """
    organs = [n for n in case.structures if not is_target(n) and n not in NOT_AN_ORGAN]
    if not organs or any(n in HEAD_NECK for n in organs):
        return None
    shown = ", ".join(organs[:8]) + (" ..." if len(organs) > 8 else "")
    return f"no head-and-neck organ among its structures ({shown})"


def check_site(case: Case, any_site: bool = False) -> str | None:
    """Refuse a patient of another site, or with ``any_site`` return the note to record in the outputs."""
    problem = site_problem(case)
    if problem is None:
        return None
    if not any_site:
        raise DoseSegError(f"patient '{case.name}': {problem}; the models know head-and-neck anatomy only "
                           f"(OpenKBP). DVH, goals and evaluation work for any site; to run the models anyway, "
                           f"pass {OVERRIDE}")
    return f"site check overridden ({OVERRIDE}): {problem}; the models were trained on head and neck only"
