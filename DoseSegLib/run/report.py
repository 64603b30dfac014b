"""The HTML report of one patient: a single self-contained file (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import math
from typing import Any
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from DoseSegLib.analysis import metric_names as mn
from DoseSegLib.core.case import chosen_target, primary_target
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.tables import Row
from DoseSegLib.run.results import PatientResult, output_files
from DoseSegLib.viz import figures

Cell = str | tuple[str, str]  # text, or (text, css class)
METRIC_COLUMNS = (
    mn.VOLUME, mn.MEAN, mn.MAX, *(mn.dose_at_pct(p) for p in (99, 95, 50, 2)), mn.dose_at_cc(0.03), "HI", "CI",
)
RADIOMICS_COLUMNS = (
    ("original_shape_MeshVolume", "Mesh volume (cc)", 1e-3), ("original_shape_Sphericity", "Sphericity", 1.0),
    ("original_firstorder_Mean", "Mean HU", 1.0), ("original_firstorder_Median", "Median HU", 1.0),
    ("original_firstorder_10Percentile", "P10 HU", 1.0), ("original_firstorder_90Percentile", "P90 HU", 1.0),
    ("original_firstorder_Entropy", "Entropy", 1.0), ("original_firstorder_Kurtosis", "Kurtosis", 1.0),
)
STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1d232b; margin: 0; background: #f4f6f8; }
main { max-width: 1240px; margin: 0 auto; padding: 18px 28px 40px; background: #fff; }
h1 { font-size: 24px; margin: 6px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid #dde3ea;
  padding-bottom: 4px; } .sub { color: #5a6673; font-size: 13px; margin: 0 0 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0; }
.card { background: #f1f5f9; border-radius: 6px; padding: 8px 12px; }
.card b { display: block; font-size: 18px; } .card span { font-size: 12px; color: #5a6673; }
.banner { background: #c62828; color: #fff; padding: 10px 14px; font-size: 15px; border-radius: 4px; }
.banner.ok { background: #e8f5e9; color: #1b5e20; font-size: 13px; }
.warnings { background: #fdecea; border-left: 4px solid #c62828; padding: 6px 12px; font-size: 14px; }
.notes { background: #fff7e0; border-left: 4px solid #e0a800; padding: 6px 12px; font-size: 14px; }
img { width: 100%; height: auto; display: block; margin: 6px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 4px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e8ee; text-align: right; white-space: nowrap; }
th { background: #eef2f6; } td:first-child, th:first-child { text-align: left; font-weight: 600; }
td.text, th.text { text-align: left; white-space: normal; font-weight: normal; }
tr:nth-child(even) td { background: #fafbfc; }
td.pass { color: #fff; background: #2e7d32 !important; text-align: center; }
td.fail { color: #fff; background: #c62828 !important; text-align: center; }
td.uncertain { color: #1d232b; background: #ffd54f !important; text-align: center; }
td.na { color: #555; background: #e0e0e0 !important; text-align: center; }
.foot { color: #5a6673; font-size: 12px; margin-top: 28px; }
"""


def _number(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    number = float(value)
    return "" if math.isnan(number) else f"{number:.{digits}f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], text_columns: Sequence[int] = ()) -> str:
    """An HTML table; a cell given as (text, class) gets that CSS class; ``text_columns`` align left."""
    def cell(tag: str, value: Cell, column: int) -> str:
        text, css = value if isinstance(value, tuple) else (value, "text" if column in text_columns else "")
        css_attr = f' class="{css}"' if css else ""
        return f"<{tag}{css_attr}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", h, i) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", v, i) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _cards(result: PatientResult) -> str:
    case = result.case
    counts = result.plan.counts()
    auto = f" ({len(result.auto_segmented)} auto-segmented)" if result.auto_segmented else ""
    cards = [
        (f"{case.main_prescription:g} Gy", "prescription"),
        (", ".join(case.targets), "targets"),
        (str(len(case.structures)), f"structures{auto}"),
        (f"{counts.get('pass', 0)} / {counts.get('fail', 0)}" + (f" / {counts['uncertain']}" if counts.get("uncertain")
                                                                  else ""),
         "clinical goals passed / failed" + (" / uncertain" if counts.get("uncertain") else "")),
        (f"{sum(result.timings.values()):.1f} s", f"analysis time ({result.device})"),
    ]
    if result.comparison is not None:
        cards[3:3] = [(f"{result.comparison.dose_error:.2f} Gy", "dose error vs reference"),
                      (f"{result.comparison.dvh_error:.2f} Gy", "DVH error vs reference")]
    body = "".join(f"<div class='card'><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for v, k in cards)
    return f"<div class='cards'>{body}</div>"


def _metrics_section(rows: Sequence[Row]) -> str:
    table = _table(
        ["Structure", *METRIC_COLUMNS],
        [[str(r["structure"]), *(_number(r.get(key), 1 if key == mn.VOLUME else 2) for key in METRIC_COLUMNS)]
         for r in rows],
    )
    methods = sorted({str(r["dvh_method"]) for r in rows if r.get("dvh_method")})
    notes = [f"{r['structure']}: {r['note']}" for r in rows if r.get("note")]
    return (f"<h2>DVH metrics (predicted dose)</h2>{table}<p class='sub'>AAPM TG-263 names. Dx%: minimum dose to "
            "the hottest x% of the structure; Dx cc: to its hottest x cm&sup3;, read on the cumulative DVH (an "
            "empty cell: the structure is smaller than x cc). HI = (D2% - D98%) / D50% and Paddick CI for "
            "targets (its spill is the isodose volume outside every other target of the same or a higher dose "
            "level). All metrics in dvh_metrics.csv.</p>"
            f"<p class='sub'>DVH method: {html.escape('; '.join(methods))}.</p>"
            + (f"<p class='sub'>{html.escape('; '.join(notes))}</p>" if notes else ""))


def _intervals_section(rows: Sequence[Row]) -> str:
    """The calibrated interval of each OAR mean and near-max and each target D95% and D2%."""
    level = float(rows[0]["level"]) if rows else 0.9
    body = [[str(r["structure"]), str(r["metric"]), _number(r["predicted"]), _number(r["lower"]), _number(r["upper"]),
             _number(float(r["upper"]) - float(r["lower"]))] for r in rows]
    table = _table(["Structure", "Metric", "Predicted (Gy)", "Lower (Gy)", "Upper (Gy)", "Width (Gy)"], body)
    return (f"<h2>How far to trust the DVH metrics ({level:.0%} intervals)</h2>{table}<p class='sub'>Each interval "
            f"should contain the plan's real value for about {level:.0%} of patients like the validation set: "
            "split-conformal, calibrated on the validation split (see the model card). A goal whose interval "
            "straddles its limit is marked uncertain. Per-voxel spread of stochastic predictions in "
            "dose_std.nrrd.</p>")


def _plan_qa_section(result: PatientResult) -> str:
    """Could this plan do better? Its metrics against the prediction's calibrated intervals (plan_qa.csv)."""
    css = {"within": "pass", "above achievable": "fail", "below achievable": "fail", "not evaluated": ""}
    body: list[list[Cell]] = [[str(r["structure"]), str(r["metric"]), _number(r["plan"]), _number(r["predicted"]),
                               _number(r["lower"]), _number(r["upper"]), (str(r["verdict"]), css[str(r["verdict"])]),
                               str(r.get("note") or "")]
                              for r in result.plan_qa]
    level = float(result.plan_qa_level)
    caution = ("<p class='fail'><b>The case is outside the model's domain: these intervals are not calibrated for "
               "it and the verdicts are extrapolations.</b></p>"
               if result.applicability is not None and not result.applicability.in_distribution else "")
    return ("<h2>Plan QA: could this plan do better?</h2>" + caution
            + _table(["Structure", "Metric", "Plan (Gy)", "Predicted (Gy)", "Lower (Gy)", "Upper (Gy)", "Verdict",
                      "Note"], body)
            + f"<p class='sub'>The plan ({html.escape(result.reference_text)}) against what plans of the training "
            f"kind achieve for this anatomy: the prediction's calibrated {level:.0%} interval (see the model card). "
            "<b>above achievable</b>: an organ dose (or a target's D2%) higher than the interval: it could be "
            "spared more; <b>below achievable</b>: lower than the interval (a target's D95%: colder than achievable; "
            "an organ: spared beyond what plans like the training ones do); <b>not evaluated</b>: the plan dose's "
            "grid leaves more than 1 % of the structure out (its dose taken as 0 Gy there). plan_qa.csv.</p>")


def _constraints_section(result: PatientResult) -> str:
    """The goals on the predicted dose, and on the reference dose when there is one."""
    def outcome(row: Row) -> list[Cell]:
        text = str(row["result"])
        css = {"pass": "pass", "fail": "fail", "uncertain": "uncertain"}.get(text, "na")
        return [_number(row.get("value")), (text, css)]

    reference = result.comparison.reference_plan.constraints if result.comparison else None
    headers = ["Structure", "Goal", "Predicted", "Result"] + (["Reference", "Result"] if reference else []) + ["Note"]
    body = []
    for index, row in enumerate(result.constraints):
        goal = f"{row['metric']} {row['operator']} {_number(row.get('limit'))} {row.get('limit_unit') or ''}"
        cells = [str(row["structure"]), goal, *outcome(row)]
        if reference:
            cells += outcome(reference[index])
        body.append([*cells, str(row.get("detail") or "")])
    return "<h2>Clinical goals</h2>" + _table(headers, body, (1, len(headers) - 1))


def _trust_section(result: PatientResult) -> str:
    """The applicability banner, the normalisation and every warning: first in the report."""
    from DoseSegLib.run.trust import applicability_text

    verdict = result.applicability.to_dict() if result.applicability is not None else None
    parts = []
    if verdict is not None and not verdict["in_distribution"]:
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in verdict["reasons"])
        parts.append(f"<div class='banner'><b>Outside the model's domain</b> (applicability score "
                     f"{verdict['score']:.1f}; threshold {verdict['threshold']:.1f}, set for a 5 % false-alarm rate "
                     "on the validation patients): the predicted dose may be far from what a plan for this patient "
                     f"would give.<ul>{reasons}</ul></div>")
    else:
        parts.append(f"<div class='banner ok'>{html.escape(applicability_text(verdict))}</div>")
    n = result.normalisation
    if n is not None:
        parts.append(f"<p class='sub'>Normalised to the prescription: {html.escape(chosen_target(n.structure, n.why))} "
                     f"{n.metric} "
                     f"{n.before_gy:.2f} &rarr; {n.after_gy:.2f} Gy ({n.after_gy / n.prescription_gy:.2%} of "
                     f"{n.prescription_gy:g} Gy, the convention of the model's training plans), factor "
                     f"{n.factor:.3f}.</p>")
    warnings = result.all_warnings
    if warnings:
        parts.append("<ul class='warnings'>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>")
    return "".join(parts)


def _prescription(result: PatientResult) -> float:
    """The dose (Gy) that scales the report's colours: known, since the dose model needs a target with one."""
    prescription = result.case.main_prescription
    assert prescription is not None, "a predicted dose has a target with a known prescription"
    return prescription


def _comparison_section(result: PatientResult) -> str:
    comparison = result.comparison
    ct, prescription = result.case.ct, _prescription(result)
    assert comparison is not None, "the comparison section is written for a patient with a reference dose"
    challenge = {(r["structure"], r["metric"]) for r in comparison.openkbp_rows}
    rows = [
        [str(r["structure"]), str(r["metric"]), _number(r["reference"]), _number(r["predicted"]),
         _number(r["difference"])]
        for r in comparison.metric_differences if (r["structure"], r["metric"]) in challenge
    ]
    figure = figures.dose_difference_png(ct, comparison.difference, prescription, _centre(result))
    return (
        "<h2>Predicted vs reference dose</h2>"
        f"<p class='sub'>Reference: {html.escape(result.reference_text)}.</p>"
        f"<p class='sub'>Dose error {comparison.dose_error:.2f} Gy: mean |predicted - reference| over the "
        f"possible-dose mask. DVH error {comparison.dvh_error:.2f} Gy: mean |difference| of the OpenKBP metrics "
        "below (OARs: D0.1cc[Gy] and Mean[Gy]; targets: D99%[Gy], D95%[Gy], D1%[Gy]) over every target with a "
        f"known prescription and every organ (here: {html.escape(', '.join(comparison.dvh_error_structures))}), "
        "computed as the challenge does on dose-grid voxels, as doseseg evaluate does (dvh_errors.csv); the "
        "table shows the same metrics as the rest of this report (partial volume), so its values match the "
        "goals.</p>"
        + (f"<p class='sub'>Not compared (the reference dose's grid leaves more than 1 % of them out, its dose "
           f"0 Gy there): {html.escape(', '.join(comparison.not_covered))}.</p>" if comparison.not_covered else "")
        + _gamma_text(comparison.gamma)
        + _image(figure, "predicted minus reference dose")
        + _table(["Structure", "Metric", "Reference (Gy)", "Predicted (Gy)", "Difference (Gy)"], rows)
        + "<p class='sub'>Every metric of every structure: comparison.csv.</p>"
    )


def _gamma_text(rows: Sequence[Row]) -> str:
    """One sentence per gamma criterion (gamma.csv)."""
    if not rows:
        return ""
    parts = [f"{r['criterion']}: {float(r['pass_rate_pct']):.1f}% pass ({float(r['failed_cc']):.0f} of "
             f"{float(r['evaluated_cc']):.0f} cc fail)" for r in rows]
    first = rows[0]
    return (f"<p class='sub'>Gamma index (global, pymedphys; reference points in the body above "
            f"{float(first['low_dose_cutoff_pct']):g}% of the reference maximum {float(first['normalisation_gy']):.1f} "
            f"Gy; {first['points_evaluated']} of {first['points']} points, a seeded random sample): "
            f"{html.escape('; '.join(parts))}.</p>")


def _radiomics_section(rows: Sequence[Row]) -> str:
    shown = [(key, label, scale) for key, label, scale in RADIOMICS_COLUMNS if any(key in r for r in rows)]
    body = [[str(r["structure"]), *(_number(float(r[k]) * s if k in r else None) for k, _, s in shown)] for r in rows]
    count = len(rows[0]) - 1
    return (f"<h2>Radiomics (CT)</h2>{_table(['Structure', *(label for _, label, _ in shown)], body)}"
            f"<p class='sub'>A selection of the {count} pyradiomics features per structure in radiomics.csv.</p>")


def _about_section(result: PatientResult) -> str:
    models = [[task, str(m["name"]), str(m["version"]), str(m["sha256"])] for task, m in result.models.items()]
    timings = [[step, _number(seconds)] for step, seconds in result.timings.items()]
    timings.append(["total", _number(sum(result.timings.values()))])
    files = [[entry.name, entry.content] for entry in output_files(result)]
    return (
        "<h2>Models</h2>" + _table(["Task", "Name", "Version", "sha256"], models, (1, 2, 3))
        + "<h2>Run time</h2>" + _table(["Step", "Seconds"], timings)
        + "<h2>Files in this folder</h2>" + _table(["File", "Content"], files, (1,))
    )


def _centre(result: PatientResult) -> tuple[int, int, int]:
    """Voxel at the centre of the primary target (:func:`primary_target`), in the figures' orientation."""
    return figures.centre_index(result.case.structures[_primary(result)])


def _primary(result: PatientResult) -> str:
    primary = primary_target(result.case)
    if primary is None:
        raise DoseSegError(f"patient '{result.case.name}': no target with a known prescription")
    return primary.name


def render_report(result: PatientResult) -> str:
    """The report of one patient as an HTML document."""
    from DoseSegLib.core.version import __version__

    case = result.case
    targets = {name: case.structures[name] for name in case.targets}
    reference = result.comparison.reference_plan.dvhs if result.comparison else None
    dose_png = figures.dose_planes_png(
        case.ct, result.dose, _prescription(result), _centre(result), targets,
        title=f"Predicted dose through the centre of {_primary(result)}",
    )
    bands = ({name: result.uncertainty.dvh_band(name, curve) for name, curve in result.dvhs.items()}
             if result.uncertainty else None)
    dvh_png = figures.dvh_png(result.dvhs, reference, case.main_prescription, bands)
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in result.notes)
    parts = [
        f"<h1>DoseSeg report: {html.escape(result.name)}</h1>",
        f"<p class='sub'>{html.escape(result.origin)} &middot; DoseSeg {__version__} &middot; "
        f"{datetime.now().strftime('%Y-%m-%d %H:%M')}</p>",
        _trust_section(result),
        _plan_qa_section(result) if result.plan_qa else "",
        _cards(result),
        f"<ul class='notes'>{notes}</ul>" if notes else "",
        "<h2>Predicted dose</h2>",
        _image(dose_png, "CT with the predicted dose"),
        "<p class='sub'>Colour wash from 10% of the prescription; isodose lines at 95, 80, 50 and 20% of it; "
        "dashed white: targets. Axial viewed from the feet (patient's right on the left).</p>",
        "<h2>Dose-volume histograms</h2>",
        _image(dvh_png, "dose-volume histograms"),
        _metrics_section(result.metrics),
        _intervals_section(result.uncertainty.intervals) if result.uncertainty else "",
        _constraints_section(result),
        _comparison_section(result) if result.comparison is not None else "",
        _radiomics_section(result.radiomics) if result.radiomics else "",
        _about_section(result),
        "<p class='foot'>Research use only. The predicted dose estimates what a good plan could achieve for this "
        "anatomy; it is not a deliverable treatment plan.</p>",
    ]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>DoseSeg report: "
            f"{html.escape(result.name)}</title><style>{STYLE}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>\n")


def write_report(path: str | Path, result: PatientResult) -> None:
    """Write ``report.html`` for one patient."""
    Path(path).write_text(render_report(result), encoding="utf-8")
