"""``doseseg run`` (the main job, for one patient or a cohort) and ``doseseg demo`` (the same on a phantom)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from DoseSegLib.cli.dicom import add_anonymise, deidentifier
from DoseSegLib.cli.evaluation import add_dvh_method
from DoseSegLib.cli.options import (
    add_any_site, add_device, add_names, add_normalise_option, add_output, add_uncertainty_options, name_mapper,
    patient_path,
)
from DoseSegLib.core.options import Device
from DoseSegLib.run.results import RunOptions

DEMO_SOURCE = "synthetic head-and-neck phantom (doseseg demo; not a patient)"
DEMO_REFERENCE = ("the phantom's dose.nrrd: a distance-to-target falloff made with the phantom, not a clinical plan "
                  "(the comparison shows the workflow, not the model's accuracy)")


def run_patients(
    patients: list[Path], output: Path, force: bool, options: RunOptions, device: Device | str = Device.AUTO,
    as_json: bool = False, source_label: str = "", per_patient: bool = False, reference_label: str = "",
    dose_model: str | None = None,
) -> int:
    """Run the main job; one patient writes into ``output``, several (or any with ``per_patient``)
    into ``output/<patient>/`` with ``output/cohort_summary.csv``.

    Returns:
        The exit code: 0, or 1 when a patient of a cohort failed.
    """
    from DoseSegLib.cli.progress import progress_enabled
    from DoseSegLib.io.outputs import check_output_dir
    from DoseSegLib.io.patient import require_patient

    check_output_dir(output, force, patients)
    single = len(patients) == 1 and not per_patient
    if single and not patients[0].is_file():  # a file is one of a DICOM series: read_patient finds its folder
        require_patient(patients[0])  # reported before the models load
    from DoseSegLib.run.pipeline import Pipeline

    bars = progress_enabled()
    pipeline = Pipeline(device, options, dose_model, progress=bars, log_lines=not bars)
    if single:
        pipeline.run(patients[0], output, force, source_label, reference_label)
        summary = json.loads((output / "summary.json").read_text())
        print(json.dumps(summary, indent=2) if as_json else _describe(summary, output))
        if options.deidentifier is not None and not as_json:
            print(f"  {patients[0]}: de-identified outputs (--anonymise) in {output}")
        return 0
    batch = pipeline.run_batch(patients, output, force)
    if as_json:
        print(json.dumps({"patients": batch.summaries, "cohort": batch.rows}, indent=2))
    else:
        for summary in batch.summaries:
            print(_describe(summary, output / summary["patient"]))
        print(f"wrote {output / 'cohort_summary.csv'} ({len(patients) - len(batch.failed)} of {len(patients)} "
              f"patients{'; failed: ' + ', '.join(batch.failed) if batch.failed else ''})")
    return 1 if batch.failed else 0


def _describe(summary: dict, folder: Path) -> str:
    """Two lines for a person: the key numbers of one patient and where the report is."""
    counts = summary["constraints"]
    parts = [f"{counts.get('pass', 0)} goals passed, {counts.get('fail', 0)} failed"]
    if summary["comparison"]:
        parts.append(f"dose error {summary['comparison']['dose_error_gy']:.2f} Gy, "
                     f"DVH error {summary['comparison']['dvh_error_gy']:.2f} Gy vs the reference")
    from DoseSegLib.analysis.normalisation import normalisation_text
    from DoseSegLib.run.trust import applicability_text

    lines = [f"{summary['patient']}: {'; '.join(parts)}", f"  {applicability_text(summary.get('applicability'))}"]
    normalisation = summary.get("normalisation")
    if normalisation:
        lines.append(f"  {normalisation_text(normalisation)}")
    lines += [f"  warning: {w}" for w in summary.get("warnings", [])[:8]]
    if (folder / "rtdose.dcm").is_file() and not (folder / "rtstruct.dcm").is_file():
        lines.append("  no rtstruct.dcm: nothing was auto-segmented (the patient's own structures are in its RTSTRUCT)")
    return "\n".join([*lines, f"  report: {folder / 'report.html'}"])


def cmd_run(args: argparse.Namespace) -> int:
    from DoseSegLib.cli.shard import apply_shard

    if not apply_shard(args):
        return 0
    options = RunOptions(
        segment=not args.no_segment, segment_all=args.segment_all, radiomics=not args.no_radiomics,
        constraints=args.constraints, tta=args.tta, allow_high_dose=args.allow_high_dose,
        dvh_method=args.dvh_method, series=args.series, names=name_mapper(args), any_site=args.any_site,
        uncertainty=args.uncertainty, level=args.level, normalise=not args.no_normalise,
        deidentifier=deidentifier(args),
    )
    return run_patients(args.patients, args.output, args.force, options, args.device, args.json,
                        per_patient=bool(args.shard), dose_model=args.model)


def cmd_demo(args: argparse.Namespace) -> int:
    from DoseSegLib.io.outputs import check_output_dir
    from DoseSegLib.io.phantom import write_phantom_patient

    check_output_dir(args.output, args.force, [])
    with tempfile.TemporaryDirectory(prefix="doseseg-demo-") as tmp:
        patient = Path(tmp) / "demo_phantom"
        write_phantom_patient(patient)
        code = run_patients([patient], args.output, args.force, RunOptions(), args.device, args.json,
                            DEMO_SOURCE, reference_label=DEMO_REFERENCE)
    if not args.json:
        print("  note: the phantom's reference dose is a distance-to-target falloff, not a clinical plan: the\n"
              "  comparison shows the workflow, not the model's accuracy (its validation scores: see the model cards)")
    return code


def register(sub: argparse._SubParsersAction) -> None:
    from DoseSegLib.cli import cohort
    from DoseSegLib.cli.shard import add_shard_option

    p = sub.add_parser(
        "run", help="the main job: segment, predict the dose, DVH, goals, radiomics, comparison and HTML report",
        description="Predict the dose of one or more patients and analyse it. One patient writes into OUTPUT; "
                    "several write OUTPUT/<patient>/ and OUTPUT/cohort_summary.csv.",
    )
    p.add_argument("patients", type=patient_path, nargs="+", help="patient folders (ct.nrrd, structures/ with a PTV)")
    _add_outputs(p)
    add_shard_option(p)
    add_names(p)
    segment = p.add_mutually_exclusive_group()
    segment.add_argument("--no-segment", action="store_true", help="never auto-segment missing OARs")
    segment.add_argument("--segment-all", action="store_true", help="replace every OAR with the model's contours")
    p.add_argument("--no-radiomics", action="store_true", help="skip the pyradiomics features")
    p.add_argument("--constraints", type=Path,
                   help="clinical goals CSV, or a site table: head-and-neck (default), prostate")
    p.add_argument("--tta", action="store_true",
                   help="average the dose (and auto-segmented OARs) with left-right mirrored predictions")
    p.add_argument("--allow-high-dose", action="store_true", help="accept a reference dose above 200 Gy")
    add_dvh_method(p)
    p.add_argument("--series", help="DICOM patient: the CT SeriesInstanceUID, when the folder holds several")
    p.add_argument("--model", help="dose model by catalogue name, bundled or your own (`doseseg models` lists them; "
                                   "default: the bundled default dose model)")
    add_anonymise(p, "; and every other output: each patient named by that pseudonym (its output folder in a "
                     "cohort too), no input path, its name and ID parts and folder name replaced in structure "
                     "names and text")
    add_any_site(p)
    add_uncertainty_options(p)
    add_normalise_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "demo", help="run the main job on a synthetic head-and-neck phantom (no data needed)",
        description="Build a synthetic head-and-neck phantom (CT, structures, reference dose) in a temporary "
                    "folder and run `doseseg run` on it: the whole product with no data at hand.",
    )
    _add_outputs(p)
    p.set_defaults(func=cmd_demo)
    cohort.register(sub)  # merge-cohort: joins the outputs of `run --shard` tasks


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    add_output(parser)
    add_device(parser)
    parser.add_argument("--json", action="store_true", help="print the summary JSON to stdout (for scripts)")
