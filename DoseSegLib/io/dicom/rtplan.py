"""RTPLAN in: prescriptions (DoseReferenceSequence TargetPrescriptionDose) and planned fractions."""

from __future__ import annotations

from dataclasses import dataclass, field

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import check_prescription


@dataclass
class Prescriptions:
    """Target doses in Gy keyed by target (canonical ROI name, else the dose reference's description)."""

    doses: dict[str, float] = field(default_factory=dict)
    fractions: int | None = None

    @property
    def highest(self) -> float | None:
        return max(self.doses.values(), default=None)


def read_prescriptions(ds, roi_names: dict[int, str]) -> Prescriptions:
    """Prescriptions of one RTPLAN; ``roi_names`` maps ROI numbers to canonical structure names."""
    result = Prescriptions()
    for item in ds.get("DoseReferenceSequence", []):
        dose = item.get("TargetPrescriptionDose")
        if dose is None or str(item.get("DoseReferenceType", "TARGET")).upper() != "TARGET":
            continue
        number = item.get("ReferencedROINumber")
        try:
            name = roi_names.get(int(number)) if number is not None else None
        except (TypeError, ValueError):
            raise DoseSegError(f"{ds.filename}: ReferencedROINumber {number!r} is not a whole number") from None
        fallback = f"DoseReference{item.get('DoseReferenceNumber', '')}"
        name = name or str(item.get("DoseReferenceDescription", "") or fallback)
        dose = check_prescription(dose, f"{ds.filename}: TargetPrescriptionDose of {name}")
        result.doses[name] = max(dose, result.doses.get(name, 0.0))
    fractions = [int(g.NumberOfFractionsPlanned) for g in ds.get("FractionGroupSequence", [])
                 if g.get("NumberOfFractionsPlanned") is not None]
    result.fractions = sum(fractions) if fractions else None
    return result


def plan_prescriptions(headers: list, roi_names: dict[int, str], frame_of_reference: str, folder) -> Prescriptions:
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
    return read_prescriptions(ds, roi_names)
