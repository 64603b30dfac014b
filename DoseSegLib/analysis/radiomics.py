"""pyradiomics features of every structure, on the CT and optionally on the dose ("dosiomics")."""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from DoseSegLib.analysis.workers import (
    WorkerJob,
    balanced_groups,
    can_start_workers,
    read_message,
    receive_volume,
    send_volume,
    write_message,
)
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
PARALLEL_MIN_VOXELS = 4_000_000  # structure boxes together: below, starting worker processes costs more than it saves
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


@dataclass(frozen=True)
class _Settings:
    """What every structure's extraction needs, sent once to each worker process."""

    classes: tuple[str, ...] | None
    params: str | None
    dose_bin_width_gy: float


@functools.lru_cache(maxsize=4)
def _extractors(settings: _Settings):
    """The CT extractor and the dose extractor (shape classes off) of ``settings``, made once per process."""
    extractor = make_extractor(settings.classes, settings.params)
    dose_extractor = make_extractor(settings.classes, settings.params, binWidth=settings.dose_bin_width_gy)
    for shape_class in SHAPE_CLASSES:
        dose_extractor.enableFeatureClassByName(shape_class, enabled=False)
    return extractor, dose_extractor


@dataclass(frozen=True)
class _Task:
    """One structure's crops: the CT and mask in the extractor's box, the dose and mask in the dose
    extractor's box (when the dose is measured too)."""

    name: str
    box: tuple[slice, ...]
    ct: Volume
    mask: Volume
    dose: Volume | None = None
    dose_mask: Volume | None = None

    @property
    def cost(self) -> int:
        """Voxels in the box: what pyradiomics' time grows with (its shape diameters the fastest)."""
        return self.mask.array.size


def _measure(settings: _Settings, task: _Task, full_shape: tuple[int, ...]) -> tuple[Row, dict]:
    """One structure's row and diagnostics (a structure pyradiomics refuses gives a warning row)."""
    extractor, dose_extractor = _extractors(settings)
    diagnostics: dict = {}
    try:
        row: Row = {"structure": task.name, **extract_features(extractor, task.ct.to_sitk(), task.mask.to_sitk(),
                                                               task.name, "", diagnostics)}
        _full_grid_diagnostics(diagnostics, task.box, full_shape)
        if task.dose is not None:
            assert task.dose_mask is not None  # sent with the dose
            row.update(extract_features(dose_extractor, task.dose.to_sitk(), task.dose_mask.to_sitk(), task.name,
                                        DOSE_PREFIX))
    except DoseSegError as exc:  # e.g. a one-voxel structure: skipped, the others go on
        log.warning("%s; structure skipped", exc)
        row = {"structure": task.name, "warning": f"skipped: {exc}"}
    return row, diagnostics


def _tasks(settings: _Settings, ct: Volume, structures: Mapping[str, Volume], dose: Volume | None) -> list[_Task]:
    extractor, dose_extractor = _extractors(settings)
    tasks = []
    for name, mask in structures.items():
        if not mask.array.any():
            raise DoseSegError(f"radiomics of structure '{name}' failed: the structure is empty")
        box = _crop_box(extractor, mask)
        dose_parts: tuple[Volume, Volume] | tuple[()] = ()
        if dose is not None:
            dose_box = _crop_box(dose_extractor, mask)
            dose_parts = (crop_box(dose, dose_box), crop_box(mask, dose_box))
        tasks.append(_Task(name, box, crop_box(ct, box), crop_box(mask, box), *dose_parts))
    return tasks


def _encode(settings: _Settings, tasks: list[_Task], full_shape: tuple[int, ...]) -> bytes:
    """The stdin of one worker: settings, then each task's header and volumes."""
    stream = io.BytesIO()
    write_message(stream, {**asdict(settings), "full_shape": list(full_shape)})
    for task in tasks:
        write_message(stream, {"name": task.name, "box": [[b.start, b.stop] for b in task.box],
                               "dose": task.dose is not None})
        for volume in (task.ct, task.mask, *((task.dose, task.dose_mask) if task.dose is not None else ())):
            send_volume(stream, volume)
    return stream.getvalue()


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The worker's side of :class:`RadiomicsJob`: read the settings and tasks, reply one JSON line per task."""
    header = read_message(stdin)
    if header is None:  # the parent closed the pipe before sending the settings
        return
    settings = _Settings(tuple(header["classes"]) if header["classes"] is not None else None, header["params"],
                         header["dose_bin_width_gy"])
    while (message := read_message(stdin)) is not None:
        box = tuple(slice(a, b) for a, b in message["box"])
        volumes = [receive_volume(stdin) for _ in range(4 if message["dose"] else 2)]
        row, diagnostics = _measure(settings, _Task(message["name"], box, *volumes), tuple(header["full_shape"]))
        write_message(stdout, {"row": row, "diagnostics": diagnostics})
        stdout.flush()


class RadiomicsJob:
    """The radiomics of a set of structures, under way: in worker processes from the start when
    there are several, else measured in this process when :meth:`result` is asked for."""

    def __init__(self, settings: _Settings, tasks: list[_Task], full_shape: tuple[int, ...], workers: int | None,
                 provenance: dict | None) -> None:
        self.settings, self.tasks, self.full_shape, self.provenance = settings, tasks, full_shape, provenance
        workers = auto_workers(tasks) if workers is None else workers
        self.groups = balanced_groups([task.cost for task in tasks], workers) if workers > 1 and len(tasks) > 1 else []
        self.job = (WorkerJob(__name__, [_encode(settings, [tasks[i] for i in group], full_shape)
                                         for group in self.groups]) if self.groups else None)

    def result(self) -> list[Row]:
        """One row per structure, in the structures' order (and the provenance filled)."""
        if self.job is None:
            results = [_measure(self.settings, task, self.full_shape) for task in self.tasks]
        else:
            found: dict[int, tuple[Row, dict]] = {}
            for group, answers in zip(self.groups, self.job.result(), strict=True):
                found.update({i: (a["row"], a["diagnostics"]) for i, a in zip(group, answers, strict=True)})
            results = [found[i] for i in range(len(self.tasks))]
        if self.provenance is not None:
            extractor, dose_extractor = _extractors(self.settings)
            self.provenance.update(
                ct=extractor_provenance(extractor), structures={row["structure"]: d for row, d in results},
                dose=extractor_provenance(dose_extractor) if any(t.dose is not None for t in self.tasks) else None)
        return [row for row, _ in results]

    def cancel(self) -> None:
        """Stop the worker processes, if any."""
        if self.job is not None:
            self.job.cancel()

    def __enter__(self) -> RadiomicsJob:
        return self

    def __exit__(self, *exc_info) -> None:
        self.cancel()


def auto_workers(tasks: list[_Task]) -> int:
    """Two processes (never more than the CPUs) when the structures' boxes together are large
    enough (clinical-size CTs) to repay starting them, else one; one too when this Python cannot
    start copies of itself (e.g. inside Slicer's application)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    large = sum(task.cost for task in tasks) >= PARALLEL_MIN_VOXELS
    return 2 if cpus >= 2 and large and can_start_workers() else 1


def start_radiomics(
    ct: Volume,
    structures: Mapping[str, Volume],
    classes: Sequence[str] | None = None,
    params: str | Path | None = None,
    dose: Volume | None = None,
    dose_bin_width_gy: float = DOSE_BIN_WIDTH_GY,
    provenance: dict | None = None,
    workers: int | None = 1,
) -> RadiomicsJob:
    """Start the radiomics of every structure: its ``result()`` is :func:`radiomics_table`'s rows.

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
        workers: processes measuring structures at once, None to choose (see :func:`auto_workers`);
            the values do not depend on it. With several, they start at once and run while the
            caller goes on until ``result()``.

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
    settings = _Settings(tuple(classes) if classes is not None else None, str(params) if params is not None else None,
                         dose_bin_width_gy)
    _extractors.cache_clear()  # a parameter file may have changed since the last call
    return RadiomicsJob(settings, _tasks(settings, ct, structures, dose), ct.shape, workers, provenance)


def radiomics_table(ct: Volume, structures: Mapping[str, Volume], *args, **kwargs) -> list[Row]:
    """One row per structure with pyradiomics' feature names as columns (e.g. ``original_firstorder_Mean``);
    the arguments are :func:`start_radiomics`'s."""
    return start_radiomics(ct, structures, *args, **kwargs).result()


if __name__ == "__main__":  # a worker process of radiomics_table (see DoseSegLib.analysis.workers)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
