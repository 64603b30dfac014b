"""Evaluation of predicted segmentations against reference patients: Dice, HD95 and dosimetric RMAE.

Metrics come from :mod:`DoseSegLib.analysis.segmetrics`. The dosimetric error follows DOSELO:
the dose network predicts the dose twice, with the reference OARs and with the
predicted ones (same CT, targets and possible-dose mask), and RMAE compares the two
over the possible-dose mask (one row per patient) and over each reference structure.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from DoseSegLib.analysis.segmetrics import dosimetric_rmae, segmentation_table
from DoseSegLib.core.alignment import align_case, align_structure
from DoseSegLib.core.case import OARS, Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.listing import patient_folders
from DoseSegLib.io.patient import read_mask, read_patient, read_segmentation
from DoseSegLib.io.tables import Row

PDM_ROW = "possible_dose_mask"
METRICS = ("dice", "hd95_mm", "surface_dice_2mm", "rmae")


def read_predicted(folder: Path) -> dict[str, Volume]:
    """A prediction folder's masks: structures/<Name>.nrrd, else segmentation.seg.nrrd."""
    files = sorted((folder / "structures").glob("*.nrrd"))
    if files:
        return {file.name[: -len(".nrrd")]: read_mask(file) for file in files}
    if (folder / "segmentation.seg.nrrd").is_file():
        return read_segmentation(folder / "segmentation.seg.nrrd")
    raise DoseSegError(f"{folder}: no structures/*.nrrd or segmentation.seg.nrrd")


def _rmae(dose: Volume, reference: Volume, mask: Volume) -> float:
    try:
        return dosimetric_rmae(dose, reference, mask)
    except DoseSegError:  # no reference dose inside the mask
        return math.nan


def evaluate_case(predicted: dict[str, Volume], case: Case, labels: tuple[str, ...], dose_model=None) -> list[Row]:
    """One row per label the aligned reference ``case`` has (a label not predicted scores as empty).

    Args:
        dose_model: a loaded dose model (``dose_prediction.load_dose_model``) for the RMAE
            column and the patient's possible-dose-mask row; None leaves them out.
    """
    reference = {n: case.structures[n] for n in labels if n in case.structures}
    on_grid = {n: align_structure(n, predicted[n], case.ct) for n in reference if n in predicted}
    rows = [{"patient": case.name, **row} for row in segmentation_table(on_grid, reference)]
    if dose_model is not None:
        from DoseSegLib.models.dose.predict import predict_case_dose

        reference_dose = predict_case_dose(dose_model, case)
        others = {n: m for n, m in case.structures.items() if n not in reference}
        dose = predict_case_dose(dose_model, replace(case, structures={**others, **on_grid}))
        for row in rows:
            row["rmae"] = _rmae(dose, reference_dose, reference[row["structure"]])
        rows.append({"patient": case.name, "structure": PDM_ROW,
                     "rmae": _rmae(dose, reference_dose, case.require_possible_dose_mask())})
    return rows


def evaluate_folder(predictions: Path, reference: Path, labels: tuple[str, ...], dose_model=None,
                    mapper: NameMapper | None = None, allow_missing: bool = False) -> list[Row]:
    """Rows of :func:`evaluate_case` for every reference patient that has a prediction folder.

    Args:
        reference: folder of the reference patients (same folder names, ct.nrrd and structures/).
        mapper: structure-name mapping of the reference patients (default aliases when None).
        allow_missing: score only the reference patients that have a prediction instead of failing.
    """
    if not predictions.is_dir():
        raise DoseSegError(f"{predictions}: prediction folder not found")
    patients = patient_folders(reference)
    missing = [p.name for p in patients if not (predictions / p.name).is_dir()]
    if missing and not allow_missing:
        raise DoseSegError(f"{predictions}: no prediction for {len(missing)} of {len(patients)} reference patients "
                           f"({', '.join(missing[:20])}); use --allow-missing to score the others")
    folders = [predictions / p.name for p in patients if p.name not in missing]
    if not folders:
        raise DoseSegError(f"{predictions}: no prediction folder matches a reference patient of {reference}")
    rows = []
    for folder in folders:
        case = align_case(read_patient(reference / folder.name, mapper))
        rows.extend(evaluate_case(read_predicted(folder), case, labels, dose_model))
    if not any(row["structure"] in labels for row in rows):
        raise DoseSegError(f"{reference}: none of the labels {', '.join(labels)} is a structure of the reference "
                           f"patients (check --labels; canonical names such as {', '.join(OARS[:3])})")
    return rows


def summarise(rows: list[Row]) -> list[Row]:
    """Per structure the mean of each metric over patients (finite values; ``missed`` counts empty
    predictions), then a "mean" row averaging the structures' means."""
    summary = []
    for name in dict.fromkeys(r["structure"] for r in rows):
        group = [r for r in rows if r["structure"] == name]
        row = {"structure": name, "patients": len(group)}
        for metric in (m for m in METRICS if m in group[0]):
            values = [r[metric] for r in group if math.isfinite(r[metric])]
            row[metric] = float(np.mean(values)) if values else math.nan
        if "hd95_mm" in row:
            row["missed"] = sum(1 for r in group if math.isinf(r["hd95_mm"]))
        summary.append(row)
    structures = [r for r in summary if r["structure"] != PDM_ROW]
    mean = {"structure": "mean", "patients": max(r["patients"] for r in summary)}
    for metric in METRICS:
        values = [r[metric] for r in structures if math.isfinite(r.get(metric, math.nan))]
        if values:
            mean[metric] = float(np.mean(values))
    pdm = [r for r in summary if r["structure"] == PDM_ROW]
    if pdm:
        mean["rmae_possible_dose_mask"] = pdm[0]["rmae"]
    return [*summary, mean]
