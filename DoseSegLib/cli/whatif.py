"""``doseseg sensitivity``: where a contour edit moves a structure's dose metric (see run/whatif.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from DoseSegLib.cli.options import add_model_options, add_output, name_mapper


def cmd_sensitivity(args: argparse.Namespace) -> None:
    from DoseSegLib.io.outputs import check_output_dir, staged_output
    from DoseSegLib.io.patient import write_volume
    from DoseSegLib.run.whatif import WhatIfSession
    from DoseSegLib.viz.figures import centre_index
    from DoseSegLib.viz.sensitivity import sensitivity_planes_png

    check_output_dir(args.output, args.force, [args.patient])
    session = WhatIfSession(args.patient, args.device, args.model, args.weights, name_mapper(args))
    structure, wrt = session.canonical(args.structure), session.canonical(args.wrt or args.structure)
    grad = session.sensitivity(structure, args.metric, wrt)
    ct = session.case.ct
    per_voxel = ct.with_array(grad)
    per_cc = ct.with_array(grad / ct.voxel_volume_cc)
    contours = {n: session.structures[n] for n in dict.fromkeys((structure, wrt))}
    title = f"d {args.metric}({structure}) / d mask({wrt})"
    png = sensitivity_planes_png(ct, per_cc, centre_index(session.structures[wrt]), contours, title)
    with staged_output(args.output, args.force, [args.patient]) as out:
        write_volume(out / "sensitivity.nrrd", per_voxel,
                     {"Structure": structure, "Metric": args.metric, "WithRespectTo": wrt,
                      "SensitivityUnits": "Gy per voxel"})
        (out / "sensitivity.png").write_bytes(png)
    print(f"wrote {args.output} ({title}: {grad.min():.3g} to {grad.max():.3g} Gy per voxel, "
          f"{grad.min() / ct.voxel_volume_cc:.3g} to {grad.max() / ct.voxel_volume_cc:.3g} Gy per cc)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sensitivity sub-command."""
    p = sub.add_parser("sensitivity", help="map of d metric / d mask voxel of a structure's predicted dose metric")
    p.add_argument("patient", type=Path, help="patient folder (ct.nrrd, structures/ with a PTV)")
    p.add_argument("--structure", required=True, help="the structure whose metric is differentiated")
    p.add_argument("--metric", default="mean", help="mean (Mean[Gy]), a near-maximum Dx%% (e.g. D2%%) or Dx cc "
                                                    "(e.g. D0.03cc); default mean")
    p.add_argument("--wrt", help="the structure whose mask is varied (default: --structure itself)")
    add_model_options(p, "the bundled default dose model", "train-dose", any_site=False)
    add_output(p)
    p.set_defaults(func=cmd_sensitivity)
