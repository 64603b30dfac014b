"""DICOM SEG of DoseSeg's auto-segmented organs (highdicom), beside the RTSTRUCT.

A binary Segmentation on the CT's frames (the CT series as source images, so PACS viewers
and Slicer overlay it on the CT), one segment per organ: its SNOMED CT anatomy code (the
organ's own where known, else "Organ"; left and right in the label), AUTOMATIC with DoseSeg's model as the algorithm,
series description marked as research output. De-identified like the other objects when
the target carries a ``Deidentifier``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from DoseSegLib.core.alignment import resample_mask
from DoseSegLib.core.version import __version__
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.carry import segmentation_model
from DoseSegLib.io.dicom.export import RESEARCH, save, short_text

if TYPE_CHECKING:
    from DoseSegLib.io.dicom.results import DicomTarget

# canonical name -> SNOMED CT concept (an attribute of pydicom's codes.SCT); the side is in the segment label
_ANATOMY = {"Brainstem": "BrainStem", "SpinalCord": "SpinalCord", "LeftParotid": "ParotidGland",
            "RightParotid": "ParotidGland", "Esophagus": "Esophagus", "Larynx": "Larynx", "Mandible": "Mandible",
            "OpticChiasm": "OpticChiasm", "Bladder": "Bladder", "Rectum": "Rectum"}


def _description(number: int, name: str, algorithm):
    """The SegmentDescription of one auto-segmented organ."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=name[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=getattr(codes.SCT, _ANATOMY.get(name, "Organ")),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def seg_available() -> bool:
    """Whether highdicom is installed (SEG output is skipped without it, e.g. in a Slicer without it)."""
    import importlib.util

    return importlib.util.find_spec("highdicom") is not None


def write_dicom_seg(path: Path, target: DicomTarget, structures: dict[str, Volume],
                    models: dict[str, dict] | None = None) -> Path:
    """Write DoseSeg's ``structures`` (masks, put on the CT grid first) as a binary DICOM SEG at ``path``.

    Args:
        target: the CT series (its slices are the source images) and the de-identification.
        structures: auto-segmented organs by canonical name.
        models: the run's models (summary.json): the segmentation model is the segments' algorithm.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    grid = target.ct.grid
    names = list(structures)
    frames = np.zeros((grid.shape[2], grid.shape[1], grid.shape[0], len(names)), dtype=bool)
    for n, name in enumerate(names):
        mask = structures[name] if structures[name].same_grid(grid) else resample_mask(structures[name], grid)
        frames[..., n] = np.asarray(mask.array, dtype=bool).transpose(2, 1, 0)  # (slices, rows, columns)
    model = segmentation_model(models or {})
    algorithm = hd.AlgorithmIdentificationSequence(name=short_text(f"DoseSeg {model}"), version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segments = [_description(n, name, algorithm) for n, name in enumerate(names, start=1)]
    seg = hd.seg.Segmentation(
        source_images=target.ct.slices, pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=segments,
        series_instance_uid=generate_uid(), series_number=9003, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="DoseSeg", manufacturer_model_name="DoseSeg research software",
        software_versions=__version__, device_serial_number="none",
        series_description=short_text(f"{RESEARCH}: auto-segmented organs"),
        content_label="DOSESEG", content_description="DoseSeg auto-segmentation, research only",
    )
    return save(seg, Path(path), target.deid)
