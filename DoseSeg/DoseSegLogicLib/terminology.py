"""Standard terminology (SNOMED CT codes) of the structures DoseSeg auto-segments, from Resources/Terminology.

``DoseSeg.term.json`` is a Slicer terminology context (the dcmqi segment-context schema, as
TotalSegmentator and MONAIAuto3DSeg ship): Slicer's Terminologies module loads it, and each
auto-segmented segment carries the entry of its structure, so the Segment Editor, DICOM SEG
export and other modules see what the segment is, not only its name.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

TERMINOLOGY_FILE = Path(__file__).resolve().parents[1] / "Resources" / "Terminology" / "DoseSeg.term.json"


def _code(entry: dict | None) -> str:
    if not entry:
        return "^^"
    return f"{entry['CodingSchemeDesignator']}^{entry['CodeValue']}^{entry['CodeMeaning']}"


@cache
def terminologyEntries(path: Path = TERMINOLOGY_FILE) -> dict[str, str]:
    """Serialized Slicer terminology entry of each structure, keyed by its canonical name (3dSlicerLabel).

    The form is Slicer's ``context~category~type~typeModifier~anatomicContext~region~regionModifier``.
    """
    document = json.loads(Path(path).read_text())
    context = document["SegmentationCategoryTypeContextName"]
    entries = {}
    for category in document["SegmentationCodes"]["Category"]:
        for kind in category["Type"]:
            for modifier in kind.get("Modifier") or [None]:
                label = (modifier or kind)["3dSlicerLabel"]
                entries[label] = f"{context}~{_code(category)}~{_code(kind)}~{_code(modifier)}~~^^~^^"
    return entries


def setTerminology(segment, structureName: str) -> bool:
    """Give ``segment`` the standard terminology of ``structureName`` (canonical name); False when it has none."""
    entry = terminologyEntries().get(structureName)
    if entry is None:
        return False
    segment.SetTerminology(entry)
    return True
