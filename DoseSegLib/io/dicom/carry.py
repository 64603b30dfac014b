"""``--all-structures``: the clinician's structures written back as the clinician drew them.

DoseSeg's own ROIs (auto-segmented) are AUTOMATIC with the model named; every other structure
keeps its original name, its RTROIInterpretedType and colour, and MANUAL generation (or the
generation its structure set gave it). When the CT folder's RTSTRUCT holds the ROI and the
results' mask is exactly that ROI rasterised on the CT grid, its contours are copied as drawn
(no voxel staircase); otherwise the mask is contoured. The body (the EXTERNAL ROI, which
DoseSeg reads as the possible-dose mask, not as a structure) is copied from that RTSTRUCT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from DoseSegLib.core.alignment import resample_mask
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.export import Generation, RoiStyle, mask_contours
from DoseSegLib.io.dicom.rasterise import rasterise
from DoseSegLib.io.dicom.rtstruct import Roi, read_rois
from DoseSegLib.io.dicom.series import SeriesGeometry


@dataclass
class RoiPlan:
    """What an RTSTRUCT will hold: contours and style per ROI name, in order."""

    contours: dict[str, list[np.ndarray]] = field(default_factory=dict)
    styles: dict[str, RoiStyle] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)  # ROIs whose contours were copied as drawn


def segmentation_model(models: Mapping[str, Mapping]) -> str:
    """The segmentation model's name and version, from a run's models (summary.json)."""
    model = models.get("segmentation") or {}
    return f"{model.get('name', 'segmentation model')} {model.get('version', '')}".strip()


def model_text(models: Mapping[str, Mapping]) -> str:
    """ROIGenerationDescription of DoseSeg's ROIs: DoseSeg's version and the segmentation model."""
    from DoseSegLib.core.version import __version__

    return f"DoseSeg {__version__} {segmentation_model(models)}"


def _original_rois(structure_set: Path | None) -> dict[str, Roi]:
    if structure_set is None:
        return {}
    import pydicom

    return {roi.name: roi for roi in read_rois(pydicom.dcmread(structure_set, stop_before_pixels=True))}


def _style_of(roi: Roi | None, name: str, color) -> RoiStyle:
    """A clinician's ROI: its type and colour as read, MANUAL unless its structure set said otherwise."""
    generation = Generation.MANUAL
    if roi is not None and roi.generation in Generation.__members__:
        generation = Generation(roi.generation)
    return RoiStyle(kind=roi.kind if roi is not None else "", generation=generation, color=color)


def plan_rois(structures: Mapping[str, Volume], auto: set[str], original_names: Mapping[str, str],
              ct: SeriesGeometry, structure_set: Path | None, models: Mapping[str, Mapping]) -> RoiPlan:
    """The ROIs of an ``--all-structures`` export (see the module's docstring).

    Args:
        structures: every structure of the results, by canonical name.
        auto: the names DoseSeg segmented.
        original_names: each structure's name as in its file, by canonical name.
        ct: the CT series the results belong to.
        structure_set: the RTSTRUCT drawn on that CT (None for an NRRD patient).
        models: the run's models (summary.json), to name the segmentation model.
    """
    originals = _original_rois(structure_set)
    plan = RoiPlan()
    for name, mask in structures.items():
        on_ct = mask if mask.same_grid(ct.grid) else resample_mask(mask, ct.grid)
        if name in auto:
            plan.contours[name] = mask_contours(on_ct)
            plan.styles[name] = RoiStyle(generation=Generation.AUTOMATIC, algorithm=model_text(models))
            continue
        written = original_names.get(name) or name
        roi = originals.get(written)
        if roi is not None and roi.contours and np.array_equal(rasterise(roi.contours, ct.grid, ct.grid.spacing[2]),
                                                               on_ct.array):
            plan.contours[written] = roi.contours
            plan.copied.append(written)
        else:
            plan.contours[written] = mask_contours(on_ct)
        plan.styles[written] = _style_of(roi, written, roi.color if roi is not None else None)
    for roi in originals.values():
        if roi.kind == "EXTERNAL" and roi.contours and roi.name not in plan.contours:
            plan.contours[roi.name] = roi.contours
            plan.styles[roi.name] = _style_of(roi, roi.name, roi.color)
            plan.copied.append(roi.name)
    return plan
