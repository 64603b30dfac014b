"""Report figures as PNG bytes: CT with a dose colour wash and isodose lines, dose differences, DVH curves.

Planes are shown as radiologists read them: axial with anterior up and the
patient's right on the image's left, coronal with superior up and the patient's
right on the left, sagittal with superior up and anterior on the left; pixels
are drawn at their physical size. Uses matplotlib's object API (Agg canvas),
never pyplot, so no global backend is changed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from DoseSegLib.analysis.dvh import DVH
from DoseSegLib.core.colors import structure_colors
from DoseSegLib.core.volume import Volume

ISODOSE_PERCENTS = (95, 80, 50, 20)
ISODOSE_COLORS = ("#ff2d2d", "#ff9f1c", "#ffe600", "#2ec4ff")
WASH_THRESHOLD = 0.10  # of the prescription: lower doses are not coloured
WASH_TOP = 1.1  # of the prescription: the top of the colour scale (higher doses share its colour)
CT_WINDOW = (-160.0, 240.0)  # soft tissue, W400 / L40
DPI = 100
_LABEL_PLACES = ((0.02, 0.5, "left", "center"), (0.98, 0.5, "right", "center"),
                 (0.5, 0.98, "center", "top"), (0.5, 0.02, "center", "bottom"))
PlaneName = str  # "axial", "coronal" or "sagittal"
PLANES: tuple[PlaneName, ...] = ("axial", "coronal", "sagittal")
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # the LPS axis each plane is a slice along


def lps_oriented(volume: Volume) -> tuple[np.ndarray, tuple[float, ...]]:
    """The array with axes along L, P, S (increasing) and its spacing, for axis-aligned grids.

    A grid whose direction is a permutation of the LPS axes (with flips) is reordered
    exactly; an oblique grid is shown as stored along its nearest axes.
    """
    lps_axis = np.argmax(np.abs(volume.direction), axis=0)  # LPS axis of each grid axis i, j, k
    if len(set(lps_axis.tolist())) < 3:
        return volume.array, volume.spacing
    order = np.argsort(lps_axis)  # grid axis lying along L, then P, then S
    array = np.transpose(volume.array, order)
    for axis, grid_axis in enumerate(order):
        if volume.direction[axis, grid_axis] < 0:
            array = np.flip(array, axis)
    return array, tuple(volume.spacing[a] for a in order)


def plane(array: np.ndarray, spacing: Sequence[float], name: PlaneName, index: int) -> tuple[np.ndarray, list]:
    """A 2D image (rows top to bottom) of an LPS-ordered array and its matplotlib extent in mm.

    Args:
        array: LPS-oriented volume (see :func:`lps_oriented`).
        spacing: its voxel size along L, P, S.
        name: ``axial`` (index along S), ``coronal`` (along P) or ``sagittal`` (along L).
        index: the slice.
    """
    sx, sy, sz = spacing
    nx, ny, nz = array.shape
    if name == "axial":  # rows anterior -> posterior, columns patient right -> left
        return array[:, :, index].T, [0, nx * sx, ny * sy, 0]
    if name == "coronal":  # rows superior -> inferior, columns patient right -> left
        return array[:, index, ::-1].T, [0, nx * sx, 0, nz * sz]
    if name == "sagittal":  # rows superior -> inferior, columns anterior -> posterior
        return array[index, :, ::-1].T, [0, ny * sy, 0, nz * sz]
    raise ValueError(f"unknown plane '{name}'")


def centre_index(mask: Volume) -> tuple[int, int, int]:
    """Voxel index (in the LPS-oriented array) of the centre of mass of a mask."""
    array, _ = lps_oriented(mask)
    return tuple(round(c) for c in np.argwhere(array).mean(axis=0))


def png_bytes(figure) -> bytes:
    """The figure as PNG file bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def new_figure(width: float, height: float):
    """A matplotlib figure (inches) with constrained layout, drawn without a GUI backend."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _body_limits(image: np.ndarray, extent: Sequence[float], margin: int = 4) -> tuple[tuple, tuple]:
    """Axis limits (x, y in the extent's units) framing the pixels above -500 HU of a CT plane."""
    rows, cols = image.shape
    x0, x1, y_bottom, y_top = extent
    dx, dy = (x1 - x0) / cols, (y_bottom - y_top) / rows
    inside = np.argwhere(image > -500)
    if inside.size == 0:
        return (x0, x1), (y_bottom, y_top)
    (r0, c0), (r1, c1) = inside.min(axis=0) - margin, inside.max(axis=0) + margin + 1
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, rows), min(c1, cols)
    return (x0 + c0 * dx, x0 + c1 * dx), (y_top + r1 * dy, y_top + r0 * dy)


def _ct_figure(ct: Volume, centre: Sequence[int], title: str, extra_height: float):
    """A figure of three CT panels (axial, coronal, sagittal), each zoomed on the body in its plane.

    Returns the figure and a list of (axes, plane name, extent) for the overlays.
    """
    ct_array, spacing = lps_oriented(ct)
    slice_of = {name: centre[PLANE_AXIS[name]] for name in PLANES}
    images = {name: plane(ct_array, spacing, name, slice_of[name]) for name in PLANES}
    limits = {name: _body_limits(*images[name]) for name in PLANES}
    widths = [abs(np.diff(x)[0] / np.diff(y)[0]) for x, y in limits.values()]
    figure = new_figure(13, 12.5 / sum(widths) + extra_height)
    figure.suptitle(title, fontsize=12)
    labels = {"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}  # left, right, top, bottom
    panels = []
    for ax, name in zip(figure.subplots(1, 3, width_ratios=widths), PLANES, strict=True):
        image, extent = images[name]
        ax.imshow(image, cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], extent=extent, interpolation="bilinear")
        ax.set_xlim(*limits[name][0])
        ax.set_ylim(*limits[name][1])
        ax.set_title(f"{name} (slice {slice_of[name]})", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        for text, (x, y, ha, va) in zip(labels[name], _LABEL_PLACES, strict=True):
            ax.text(x, y, text, transform=ax.transAxes, color="white", fontsize=9, fontweight="bold", ha=ha, va=va)
        panels.append((ax, name, extent))
    return figure, panels


def _plane_of(volume: Volume, name: PlaneName, centre: Sequence[int]) -> np.ndarray:
    array, spacing = lps_oriented(volume)
    return plane(array, spacing, name, centre[PLANE_AXIS[name]])[0]


def dose_planes_png(
    ct: Volume,
    dose: Volume,
    prescription: float,
    centre: Sequence[int],
    contours: Mapping[str, Volume] | None = None,
    title: str = "Predicted dose",
) -> bytes:
    """Axial, coronal and sagittal CT planes through ``centre`` with the dose wash and isodose lines.

    Args:
        ct: CT (HU); ``dose`` and ``contours`` share its grid.
        dose: dose in Gy.
        prescription: Gy; isodose lines at 95, 80, 50 and 20 % of it, no colour below 10 %.
        centre: voxel index in the LPS-oriented array (see :func:`centre_index`).
        contours: structures drawn as thin dashed white outlines (e.g. the targets).
    """
    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    figure, panels = _ct_figure(ct, centre, title, extra_height=1.3)
    top = WASH_TOP * prescription
    outline = [patheffects.withStroke(linewidth=2.6, foreground="black")]
    for ax, name, extent in panels:
        values = _plane_of(dose, name, centre)
        wash = np.ma.masked_less(values, WASH_THRESHOLD * prescription)
        image = ax.imshow(wash, cmap="turbo", vmin=0, vmax=top, alpha=0.45, extent=extent, interpolation="bilinear")
        levels = [p / 100 * prescription for p in sorted(ISODOSE_PERCENTS)]
        colors = list(reversed(ISODOSE_COLORS))
        if values.max() >= levels[0]:
            ax.contour(values, levels, colors=colors, linewidths=1.3, extent=extent, origin="upper",
                       path_effects=outline)
        for mask in (contours or {}).values():
            region = _plane_of(mask, name, centre)
            if region.any():
                ax.contour(region.astype(np.float32), [0.5], colors="white", linewidths=0.8, linestyles="--",
                           extent=extent, origin="upper")
    figure.colorbar(image, ax=figure.axes, label="dose (Gy)", shrink=0.8, pad=0.01, extend="max")
    handles = [Line2D([], [], color=c, lw=2, path_effects=outline) for c in ISODOSE_COLORS]
    labels = [f"{p}% ({p / 100 * prescription:.1f} Gy)" for p in ISODOSE_PERCENTS]
    if contours:
        handles.append(Line2D([], [], color="white", lw=1, ls="--", path_effects=outline))
        labels.append(", ".join(contours))
    figure.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    return png_bytes(figure)


def dose_difference_png(
    ct: Volume, difference: Volume, prescription: float, centre: Sequence[int],
    title: str = "Predicted minus reference dose",
) -> bytes:
    """The three CT planes with ``difference`` (Gy) in blue (predicted lower) to red (higher).

    The colour scale spans +-20 % of the prescription; differences under 2 % are not coloured.
    """
    figure, panels = _ct_figure(ct, centre, title, extra_height=0.9)
    limit = 0.2 * prescription
    for ax, name, extent in panels:
        values = _plane_of(difference, name, centre)
        wash = np.ma.masked_inside(values, -0.02 * prescription, 0.02 * prescription)
        image = ax.imshow(wash, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.75, extent=extent,
                          interpolation="nearest")
    figure.colorbar(image, ax=figure.axes, label="predicted - reference (Gy)", shrink=0.8, pad=0.01)
    return png_bytes(figure)


def dvh_png(
    dvhs: Mapping[str, DVH],
    reference: Mapping[str, DVH] | None = None,
    prescription: float | None = None,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> bytes:
    """Cumulative DVHs (volume %) of every structure in its colour (see colors.py); reference curves dashed.

    ``bands``: per structure, dose bins and the low and high volume (%) of a shaded uncertainty band.
    """
    from matplotlib.lines import Line2D

    colors = structure_colors(dvhs)
    figure = new_figure(12.4, 5.0)
    ax = figure.subplots()
    for name, curve in dvhs.items():
        ax.plot(curve.dose_gy, curve.volume_pct, color=colors[name], lw=1.8, label=name)
        if bands and name in bands:
            ax.fill_between(*bands[name], color=colors[name], alpha=0.2, lw=0)
        if reference and name in reference:
            ax.plot(reference[name].dose_gy, reference[name].volume_pct, color=colors[name], lw=1.4, ls="--")
    if prescription:
        ax.axvline(prescription, color="black", lw=0.8, ls=":")
        ax.text(prescription, 101, f"Rx {prescription:g} Gy", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if reference:
        handles += [Line2D([], [], color="black", lw=1.8), Line2D([], [], color="black", lw=1.4, ls="--")]
        labels += ["predicted", "reference"]
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    title = "Dose-volume histograms" + (" (dashed: reference)" if reference else "")
    ax.set_title(title + (" (shaded: each curve moved by its calibrated interval)" if bands else ""), fontsize=12)
    return png_bytes(figure)
