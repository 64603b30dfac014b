"""Figure of a sensitivity map (d metric / d mask voxel) on three CT planes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from DoseSegLib.core.volume import Volume
from DoseSegLib.viz.figures import _ct_figure, _plane_of, png_bytes

SHOWN_FRACTION = 0.02  # values below this fraction of the largest magnitude are left transparent


def sensitivity_planes_png(
    ct: Volume, gy_per_cc: Volume, centre: Sequence[int], contours: Mapping[str, Volume], title: str,
) -> bytes:
    """Axial, coronal and sagittal CT planes through ``centre`` with the map as a blue-red overlay
    (red: adding the voxel raises the metric) and the structures as outlines.

    Args:
        ct: CT (HU); the map and contours share its grid.
        gy_per_cc: sensitivity in Gy per cm^3 of contour change.
        centre: voxel index in the LPS-oriented array (``figures.centre_index``).
        contours: structures drawn as white outlines (the structure and the edited one).
        title: the figure's title.
    """
    figure, panels = _ct_figure(ct, centre, title, extra_height=0.8)
    top = float(np.abs(gy_per_cc.array).max()) or 1.0
    image = None
    for ax, name, extent in panels:
        values = _plane_of(gy_per_cc, name, centre)
        shown = np.ma.masked_where(np.abs(values) < SHOWN_FRACTION * top, values)
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-top, vmax=top, alpha=0.7, extent=extent,
                          interpolation="nearest")
        for mask in contours.values():
            region = _plane_of(mask, name, centre)
            if region.any():
                ax.contour(region.astype(np.float32), [0.5], colors="white", linewidths=0.9,
                           extent=extent, origin="upper")
    figure.colorbar(image, ax=figure.axes, label="Gy per cc of contour added", shrink=0.8, pad=0.01)
    return png_bytes(figure)
