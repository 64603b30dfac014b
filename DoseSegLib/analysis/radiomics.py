"""pyradiomics features of every structure, on the CT and optionally on the dose ("dosiomics")."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume, crop_box, mask_box
from DoseSegLib.io.tables import Row

log = logging.getLogger(__name__)

DEFAULT_CLASSES = ("firstorder", "shape")
DOSE_PREFIX = "dose_"
DOSE_BIN_WIDTH_GY = 1.0
SHAPE_CLASSES = ("shape", "shape2D")
# Voxels kept around each structure's box: pyradiomics reads only the mask's box for the
# original image (it crops with padDistance 0 there; shape pads the mask itself).
CROP_MARGIN = 2
INSTALL_HINT = (
    "pyradiomics is not installed; install it with "
    "`pip install numpy versioneer && pip install --no-build-isolation pyradiomics==3.0.1` "
    "(the project's setup.sh does this)"
)


def _featureextractor():
    """pyradiomics' featureextractor module, imported on first use, with its logging quietened."""
    try:
        import radiomics
        from radiomics import featureextractor
    except ImportError as exc:
        raise DoseSegError(INSTALL_HINT) from exc
    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    logging.getLogger("pykwalify").setLevel(logging.CRITICAL)  # its errors reach users as DoseSegError
    return featureextractor


def make_extractor(classes: Sequence[str] | None = None, params: str | Path | None = None, **settings):
    """A configured ``RadiomicsFeatureExtractor``.

    Args:
        classes: feature classes to enable (e.g. firstorder, shape, glcm, glrlm, glszm, gldm, ngtdm).
            Default: the parameter file's classes when one is given, else first-order and shape.
        params: a pyradiomics parameter file (YAML or JSON); pyradiomics' own defaults otherwise.
        settings: setting overrides (e.g. ``binWidth=1.0``).
    """
    featureextractor = _featureextractor()
    if params is not None and not Path(params).is_file():
        raise DoseSegError(f"{params}: pyradiomics parameter file not found")
    args = (str(params),) if params is not None else ()
    try:
        with warnings.catch_warnings():  # pykwalify loads pyradiomics' schema with a deprecated importer
            warnings.simplefilter("ignore", DeprecationWarning)
            extractor = featureextractor.RadiomicsFeatureExtractor(*args, **settings)
    except Exception as exc:  # pykwalify raises its own error types for invalid files
        detail = " ".join(str(exc).split())
        raise DoseSegError(f"{params}: invalid pyradiomics parameter file ({detail})") from exc
    if classes is None and params is None:
        classes = DEFAULT_CLASSES
    if classes is not None:
        unknown = [c for c in classes if c not in extractor.featureClassNames]
        if unknown:
            raise DoseSegError(
                f"unknown radiomics feature class(es) {', '.join(unknown)}; "
                f"available: {', '.join(extractor.featureClassNames)}"
            )
        extractor.disableAllFeatures()
        for name in classes:
            extractor.enableFeatureClassByName(name)
    return extractor


def _plain(value: object) -> object:
    """A pyradiomics setting or diagnostic as JSON data."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def extractor_provenance(extractor) -> dict[str, object]:
    """The pyradiomics version and the extractor's settings, image types and enabled features."""
    import radiomics

    return {"pyradiomics_version": radiomics.__version__, "settings": _plain(extractor.settings),
            "enabled_image_types": _plain(extractor.enabledImagetypes),
            "enabled_features": _plain(extractor.enabledFeatures)}


def extract_features(
    extractor, image, mask, name: str, prefix: str = "", diagnostics: dict | None = None
) -> dict[str, float]:
    """pyradiomics' features of one mask (SimpleITK images), ``diagnostics_`` entries left out.

    Args:
        extractor: a ``RadiomicsFeatureExtractor``.
        image: the SimpleITK image.
        mask: the SimpleITK label image (label 1) on the same grid.
        name: structure name for error messages.
        prefix: text put before each feature name.
        diagnostics: receives pyradiomics' ``diagnostics_`` entries (versions, settings, image
            and mask checks), keyed without the prefix, when given.
    """
    try:
        result = extractor.execute(image, mask, label=1)
    except (ValueError, RuntimeError) as exc:
        raise DoseSegError(f"radiomics of structure '{name}' failed: {exc}") from exc
    if diagnostics is not None:
        diagnostics.update({k[len("diagnostics_"):]: _plain(v) for k, v in result.items()
                            if k.startswith("diagnostics_")})
    return {prefix + key: float(value) for key, value in result.items() if not key.startswith("diagnostics_")}


def _crop_box(extractor, mask: Volume) -> tuple[slice, ...]:
    """Where to crop for ``extractor``: the mask's box plus a margin, or the whole grid when
    filtered image types (LoG, wavelet...) are enabled, whose values depend on the surroundings."""
    if set(extractor.enabledImagetypes) != {"Original"} or extractor.settings.get("resampledPixelSpacing"):
        return tuple(slice(0, n) for n in mask.shape)
    return mask_box(mask.array, CROP_MARGIN + int(extractor.settings.get("padDistance", 0)))


def _full_grid_diagnostics(diagnostics: dict, box: tuple[slice, ...], shape: tuple[int, ...]) -> None:
    """Turn pyradiomics' box-relative mask indices back into indices of the whole CT grid."""
    start = [region.start for region in box]
    for key, value in list(diagnostics.items()):
        if key.endswith("_BoundingBox"):
            diagnostics[key] = [v + start[i] for i, v in enumerate(value[:3])] + list(value[3:])
        elif key.endswith("_CenterOfMassIndex"):
            diagnostics[key] = [v + start[i] for i, v in enumerate(value)]
    diagnostics["Image-crop_Box"] = [*start, *(region.stop - region.start for region in box)]
    diagnostics["Image-full_Size"] = list(shape)


def radiomics_table(
    ct: Volume,
    structures: Mapping[str, Volume],
    classes: Sequence[str] | None = None,
    params: str | Path | None = None,
    dose: Volume | None = None,
    dose_bin_width_gy: float = DOSE_BIN_WIDTH_GY,
    provenance: dict | None = None,
) -> list[Row]:
    """One row per structure with pyradiomics' feature names as columns (e.g. ``original_firstorder_Mean``).

    Args:
        ct: the CT (HU).
        structures: boolean masks on the CT grid.
        classes: feature classes (see ``make_extractor``).
        params: a pyradiomics parameter file.
        dose: also compute features of the dose (Gy, on the CT grid), as ``dose_``-prefixed columns;
            shape classes are left out there since they depend on the mask only.
        dose_bin_width_gy: grey-level bin width of the dose features.
        provenance: receives, when given, what the pyradiomics command line keeps beside its
            features: version, settings, enabled features, and each structure's diagnostics
            (``radiomics.json``).

    Each structure is measured on the CT cropped to its bounding box (plus a margin), which
    gives pyradiomics' full-image values for the original image type; the diagnostics then
    describe that box (``Image-crop_Box`` says where it lies; bounding boxes and centres of
    mass are given in indices of the whole CT grid).
    """
    for name, mask in structures.items():
        if not mask.same_grid(ct):
            raise DoseSegError(f"structure '{name}' is not on the CT grid: align the case first")
    if dose is not None and not dose.same_grid(ct):
        raise DoseSegError("the dose is not on the CT grid: align the case first")
    extractor = make_extractor(classes, params)
    dose_extractor = None
    if dose is not None:
        dose_extractor = make_extractor(classes, params, binWidth=dose_bin_width_gy)
        for shape_class in SHAPE_CLASSES:
            dose_extractor.enableFeatureClassByName(shape_class, enabled=False)
    diagnostics: dict[str, dict] = {}
    rows = []
    for name, mask in structures.items():
        if not mask.array.any():
            raise DoseSegError(f"radiomics of structure '{name}' failed: the structure is empty")
        box = _crop_box(extractor, mask)
        label = crop_box(mask, box).to_sitk()
        diagnostics[name] = {}
        try:
            row: Row = {"structure": name, **extract_features(extractor, crop_box(ct, box).to_sitk(), label, name,
                                                              "", diagnostics[name])}
            _full_grid_diagnostics(diagnostics[name], box, ct.shape)
            if dose_extractor is not None:
                dose_box = _crop_box(dose_extractor, mask)
                row.update(extract_features(dose_extractor, crop_box(dose, dose_box).to_sitk(),
                                            crop_box(mask, dose_box).to_sitk(), name, DOSE_PREFIX))
        except DoseSegError as exc:  # e.g. a one-voxel structure: skipped, the others go on
            log.warning("%s; structure skipped", exc)
            row = {"structure": name, "warning": f"skipped: {exc}"}
        rows.append(row)
    if provenance is not None:
        provenance.update(ct=extractor_provenance(extractor), structures=diagnostics,
                          dose=extractor_provenance(dose_extractor) if dose_extractor is not None else None)
    return rows
