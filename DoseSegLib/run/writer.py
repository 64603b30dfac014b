"""Writing one patient's results: every file of :data:`~DoseSegLib.run.results.OUTPUT_FILES`, summary.json last."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from DoseSegLib.core.volume import Volume, crop_to_content
from DoseSegLib.run.results import COMPARISON_COLUMNS, PatientResult, output_files
from DoseSegLib.run.steps import Steps

if TYPE_CHECKING:
    from DoseSegLib.io.dicom.deid import Deidentifier

T = TypeVar("T")


def nonzero_box(volume: Volume) -> Volume:
    """``volume`` cropped to the box of its non-zero voxels, as planning systems export doses: the
    same voxels at the same positions on the CT grid, without the zeros around the patient."""
    return crop_to_content(volume, volume.array != 0)


def present(value: T | None) -> T:
    """``value``, which the file being written needs (``output_files`` lists that file only when it is there)."""
    assert value is not None, "an output file was listed without what it is written from"
    return value


def _writers(result: PatientResult, deid: Deidentifier | None = None) -> dict[str, Callable[[Path], object]]:
    """For each output file name, how to write it from ``result``."""
    from DoseSegLib.analysis.constraints import write_constraints_csv
    from DoseSegLib.analysis.dvh import write_dvh_csv, write_metrics_csv
    from DoseSegLib.analysis.evaluation import DVH_ERROR_COLUMNS
    from DoseSegLib.analysis.gamma import GAMMA_COLUMNS
    from DoseSegLib.analysis.intervals import INTERVAL_COLUMNS
    from DoseSegLib.analysis.plan_qa import PLAN_QA_COLUMNS
    from DoseSegLib.core.colors import structure_colors
    from DoseSegLib.io.dicom.results import read_dicom_target, write_dicom_dose, write_dicom_structures
    from DoseSegLib.io.dicom.seg import write_dicom_seg
    from DoseSegLib.io.patient import write_dose, write_segmentation
    from DoseSegLib.io.tables import columns_of, write_csv
    from DoseSegLib.run.report import write_report

    structures = result.case.structures
    comparison = result.comparison
    auto = {name: structures[name] for name in result.auto_segmented}
    # one scan of the patient's DICOM folder for both files
    target = cache(lambda: read_dicom_target(present(result.case.source), result.case.dicom_series, deid))
    return {
        "report.html": lambda path: write_report(path, result),
        "dose.nrrd": lambda path: write_dose(path, nonzero_box(result.dose)),
        "segmentation.seg.nrrd": lambda path: write_segmentation(path, structures, structure_colors(structures),
                                                                      crop=True),
        "dvh.csv": lambda path: write_dvh_csv(path, result.dvhs),
        "dvh_metrics.csv": lambda path: write_metrics_csv(path, result.metrics),
        "constraints.csv": lambda path: write_constraints_csv(path, result.constraints),
        "dose_std.nrrd": lambda path: write_dose(path, nonzero_box(present(result.uncertainty).std)),
        "dvh_intervals.csv": lambda path: write_csv(path, present(result.uncertainty).intervals, INTERVAL_COLUMNS),
        "radiomics.csv": lambda path: write_csv(path, result.radiomics, columns_of(result.radiomics, ("structure",))),
        "radiomics.json": lambda path: path.write_text(json.dumps(result.radiomics_provenance, indent=2) + "\n"),
        "dose_difference.nrrd": lambda path: write_dose(path, nonzero_box(present(comparison).difference)),
        "comparison.csv": lambda path: write_csv(path, present(comparison).metric_differences, COMPARISON_COLUMNS),
        "dvh_errors.csv": lambda path: write_csv(
            path, [{"patient": result.name, **row} for row in present(comparison).openkbp_rows], DVH_ERROR_COLUMNS),
        "dvh_reference.csv": lambda path: write_dvh_csv(path, present(comparison).reference_plan.dvhs),
        "gamma.csv": lambda path: write_csv(path, present(comparison).gamma, GAMMA_COLUMNS),
        "plan_qa.csv": lambda path: write_csv(path, result.plan_qa, PLAN_QA_COLUMNS),
        "rtdose.dcm": lambda path: write_dicom_dose(path, target(), result.dose),
        "rtstruct.dcm": lambda path: write_dicom_structures(path, target(), auto, result.models),
        "seg.dcm": lambda path: write_dicom_seg(path, target(), auto, result.models),
        "summary.json": lambda path: path.write_text(json.dumps(result.summary(), indent=2) + "\n"),
    }


def write_results(result: PatientResult, folder: Path, steps: Steps | None = None,
                  deid: Deidentifier | None = None) -> None:
    """Write every output file of one patient into an existing (staging) folder, ``summary.json`` last;
    ``deid`` de-identifies the DICOM files."""
    steps = steps or Steps(result.name, False)
    writers = _writers(result, deid)
    files = [entry.name for entry in output_files(result)]
    with steps("report"):
        writers["report.html"](folder / "report.html")
    with steps("write"), ThreadPoolExecutor(2) as volumes:
        # NRRD volumes are compressed in two threads (zlib lets go of the GIL) while the tables are written
        rest = [name for name in files if name not in ("report.html", "summary.json")]
        pending = [volumes.submit(writers[name], folder / name) for name in rest if name.endswith(".nrrd")]
        for name in rest:
            if not name.endswith(".nrrd"):
                writers[name](folder / name)
        for future in pending:
            future.result()
    result.timings.update(report=steps.timings["report"], write=steps.timings["write"])
    writers["summary.json"](folder / "summary.json")
