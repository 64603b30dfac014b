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

from .dvh import DVH
from .volume import Volume

ISODOSE_PERCENTS = (95, 80, 50, 20)
ISODOSE_COLORS = ("#ff2d2d", "#ff9f1c", "#ffe600", "#2ec4ff")
WASH_THRESHOLD = 0.10  # of the prescription: lower doses are not coloured
CT_WINDOW = (-160.0, 240.0)  # soft tissue, W400 / L40
DPI = 100
STRUCTURE_COLORS = {
    "Brainstem": (0.85, 0.65, 0.13),
    "SpinalCord": (0.20, 0.63, 0.17),
    "RightParotid": (0.12, 0.47, 0.71),
    "LeftParotid": (0.65, 0.81, 0.89),
    "Esophagus": (0.58, 0.40, 0.74),
    "Larynx": (0.55, 0.34, 0.29),
    "Mandible": (0.50, 0.50, 0.50),
    "PTV70": (0.89, 0.10, 0.11),
    "PTV63": (1.00, 0.50, 0.00),
    "PTV56": (0.97, 0.51, 0.75),
}
_EXTRA_COLORS = ((0.09, 0.75, 0.81), (0.74, 0.74, 0.13), (0.17, 0.17, 0.17), (0.62, 0.85, 0.90))
PlaneName = str  # "axial", "coronal" or "sagittal"
PLANES: tuple[PlaneName, ...] = ("axial", "coronal", "sagittal")


def structure_colors(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A fixed RGB colour (0-1) for each structure: canonical names keep theirs, others share a cycle."""
    others = iter(_EXTRA_COLORS * (1 + len(names) // len(_EXTRA_COLORS)))
    return {name: STRUCTURE_COLORS.get(name) or next(others) for name in names}


def lps_oriented(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
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
    return tuple(int(round(c)) for c in np.argwhere(array).mean(axis=0))


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _ct_panels(figure, ct: Volume, centre: Sequence[int], title: str):
    """Three axes (axial, coronal, sagittal) showing the CT; yields (axes, plane name, extent)."""
    ct_array, spacing = lps_oriented(ct)
    axes = figure.subplots(1, 3, width_ratios=_panel_widths(ct_array.shape, spacing))
    figure.suptitle(title, fontsize=12)
    slice_of = dict(zip(("sagittal", "coronal", "axial"), centre))
    labels = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
    for ax, name in zip(axes, PLANES):
        image, extent = plane(ct_array, spacing, name, slice_of[name])
        ax.imshow(image, cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], extent=extent, interpolation="bilinear")
        left, right, top, bottom = labels[name]
        ax.set_title(f"{name} (slice {slice_of[name]})", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        for text, xy, align in ((left, (0.02, 0.5), "left"), (right, (0.98, 0.5), "right")):
            ax.text(*xy, text, transform=ax.transAxes, color="white", ha=align, va="center", fontsize=9)
        for text, xy, align in ((top, (0.5, 0.98), "top"), (bottom, (0.5, 0.02), "bottom")):
            ax.text(*xy, text, transform=ax.transAxes, color="white", ha="center", va=align, fontsize=9)
        yield ax, name, extent


def _panel_widths(shape: Sequence[int], spacing: Sequence[float]) -> list[float]:
    """Relative widths making the three panels the same height on screen."""
    size = np.asarray(shape) * np.asarray(spacing)
    return [size[0] / size[1], size[0] / size[2], size[1] / size[2]]


def _plane_of(volume: Volume, name: PlaneName, centre: Sequence[int]) -> np.ndarray:
    array, spacing = lps_oriented(volume)
    return plane(array, spacing, name, dict(zip(("sagittal", "coronal", "axial"), centre))[name])[0]


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

    figure = _figure(13, 4.6)
    top = max(1.1 * prescription, float(dose.array.max()))
    outline = [patheffects.withStroke(linewidth=2.6, foreground="black")]
    for ax, name, extent in _ct_panels(figure, ct, centre, title):
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
    figure.colorbar(image, ax=figure.axes, label="dose (Gy)", shrink=0.8, pad=0.01)
    handles = [Line2D([], [], color=c, lw=2, path_effects=outline) for c in ISODOSE_COLORS]
    labels = [f"{p}% ({p / 100 * prescription:.1f} Gy)" for p in ISODOSE_PERCENTS]
    if contours:
        handles.append(Line2D([], [], color="white", lw=1, ls="--", path_effects=outline))
        labels.append(", ".join(contours))
    figure.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    return _png(figure)


def dose_difference_png(
    ct: Volume, difference: Volume, prescription: float, centre: Sequence[int],
    title: str = "Predicted minus reference dose",
) -> bytes:
    """The three CT planes with ``difference`` (Gy) in blue (predicted lower) to red (higher).

    The colour scale spans +-20 % of the prescription; differences under 2 % are not coloured.
    """
    figure = _figure(13, 4.3)
    limit = 0.2 * prescription
    for ax, name, extent in _ct_panels(figure, ct, centre, title):
        values = _plane_of(difference, name, centre)
        wash = np.ma.masked_inside(values, -0.02 * prescription, 0.02 * prescription)
        image = ax.imshow(wash, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.75, extent=extent,
                          interpolation="nearest")
    figure.colorbar(image, ax=figure.axes, label="predicted - reference (Gy)", shrink=0.8, pad=0.01)
    return _png(figure)


def dvh_png(
    dvhs: Mapping[str, DVH],
    reference: Mapping[str, DVH] | None = None,
    prescription: float | None = None,
    colors: Mapping[str, tuple[float, float, float]] | None = None,
) -> bytes:
    """Cumulative DVHs (volume %) of every structure, one colour each; reference curves dashed."""
    from matplotlib.lines import Line2D

    colors = colors or structure_colors(list(dvhs))
    figure = _figure(10, 5.2)
    ax = figure.subplots()
    for name, curve in dvhs.items():
        ax.plot(curve.dose_gy, curve.volume_pct, color=colors[name], lw=1.8, label=name)
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
    ax.set_title("Dose-volume histograms" + (" (dashed: reference plan)" if reference else ""), fontsize=12)
    return _png(figure)
