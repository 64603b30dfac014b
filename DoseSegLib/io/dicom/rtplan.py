"""RTPLAN in: prescriptions (DoseReferenceSequence TargetPrescriptionDose) and planned fractions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import check_prescription, not_a_target

log = logging.getLogger(__name__)
# DoseReferenceStructureType, most trusted first: a volume's prescription over a point's (ICRU reference point)
KINDS = ("VOLUME", "SITE")


@dataclass
class Prescriptions:
    """Target doses in Gy keyed by target (canonical ROI name, else the dose reference's description mapped
    like ROI names); ``references``: which dose reference gave each dose, for messages."""

    doses: dict[str, float] = field(default_factory=dict)
    fractions: int | None = None
    references: dict[str, str] = field(default_factory=dict)

    @property
    def highest(self) -> float | None:
        return max(self.doses.values(), default=None)


@dataclass(frozen=True)
class _Reference:
    rank: int
    kind: str
    dose: float
    label: str


def _label(item) -> str:
    """``dose reference 2 'PTV_70'`` (its number and description)."""
    description = str(item.get("DoseReferenceDescription", "") or "")
    return f"dose reference {item.get('DoseReferenceNumber', '?')}" + (f" '{description}'" if description else "")


def _target_name(ds, item, roi_names: dict[int, str], name_of: Callable[[str], str]) -> str:
    """The structure a dose reference points at: its ROI, else its description mapped like ROI names."""
    number = item.get("ReferencedROINumber")
    try:
        name = roi_names.get(int(number)) if number is not None else None
    except (TypeError, ValueError):
        raise DoseSegError(f"{ds.filename}: ReferencedROINumber {number!r} is not a whole number") from None
    if number is not None and name is None:
        log.warning("%s: %s: ReferencedROINumber %s is no ROI of the structure set; its description is used",
                    ds.filename, _label(item), number)
    description = str(item.get("DoseReferenceDescription", "") or "")
    return name or (name_of(description) if description else f"DoseReference{item.get('DoseReferenceNumber', '')}")


def _choose(file: str, name: str, found: list[_Reference]) -> _Reference:
    """The reference whose dose is used: a VOLUME's, then a SITE's, then a point's; among disagreeing
    references of that kind the highest (a warning names them)."""
    best = min(r.rank for r in found)
    same = sorted((r for r in found if r.rank == best), key=lambda r: -r.dose)
    chosen = same[0]
    if len({r.dose for r in same}) > 1:
        log.warning("%s: %s: %s dose references disagree (%s): %g Gy used", file, name, chosen.kind,
                    ", ".join(f"{r.label} {r.dose:g} Gy" for r in same), chosen.dose)
    others = [r for r in found if r.rank != best and r.dose != chosen.dose]
    if others:
        log.info("%s: %s: the %s dose reference's %g Gy used, not %s", file, name, chosen.kind, chosen.dose,
                 ", ".join(f"{r.label} ({r.kind}) {r.dose:g} Gy" for r in others))
    return chosen


def read_prescriptions(ds, roi_names: dict[int, str], name_of: Callable[[str], str] = str) -> Prescriptions:
    """Prescriptions of one RTPLAN.

    Args:
        roi_names: canonical structure names by ROI number.
        name_of: the structure name of a dose reference's description (as ROI names are mapped).
    """
    found: dict[str, list[_Reference]] = {}
    for item in ds.get("DoseReferenceSequence", []):
        dose = item.get("TargetPrescriptionDose")
        if dose is None or str(item.get("DoseReferenceType", "TARGET")).upper() != "TARGET":
            continue
        name = _target_name(ds, item, roi_names, name_of)
        what = not_a_target(name)
        if what:
            log.warning("%s: %s is a TARGET dose reference on %s, %s: ignored", ds.filename, _label(item), name, what)
            continue
        gy = check_prescription(dose, f"{ds.filename}: TargetPrescriptionDose of {name}")
        kind = str(item.get("DoseReferenceStructureType", "") or "").upper()
        rank = KINDS.index(kind) if kind in KINDS else len(KINDS)
        found.setdefault(name, []).append(_Reference(rank, kind or "unknown", gy, _label(item)))
    result = Prescriptions()
    for name, references in found.items():
        chosen = _choose(str(ds.filename), name, references)
        result.doses[name], result.references[name] = chosen.dose, chosen.label
    fractions = [int(g.NumberOfFractionsPlanned) for g in ds.get("FractionGroupSequence", [])
                 if g.get("NumberOfFractionsPlanned") is not None]
    result.fractions = sum(fractions) if fractions else None
    return result


def plan_prescriptions(headers: list, roi_names: dict[int, str], frame_of_reference: str, folder,
                       name_of: Callable[[str], str] = str) -> Prescriptions:
    """Prescriptions of the folder's RTPLAN (none when absent); several plans are refused."""
    if not headers:
        return Prescriptions()
    if len(headers) > 1:
        raise DoseSegError(f"{folder}: {len(headers)} RTPLAN files ({', '.join(str(h.filename) for h in headers)}); "
                           "keep the plan whose prescriptions apply")
    ds = headers[0]
    frame = str(ds.get("FrameOfReferenceUID", ""))
    if frame and frame_of_reference and frame != frame_of_reference:
        raise DoseSegError(f"{ds.filename}: RTPLAN in Frame of Reference {frame}, the CT in {frame_of_reference}")
    return read_prescriptions(ds, roi_names, name_of)
