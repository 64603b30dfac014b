"""Inputs of the segmentation network, built from patient folders, and the training-sample cache.

A patient folder holds ct.nrrd, structures/<Name>.nrrd (or a .seg.nrrd) and, for
multi-input models, further images (e.g. pet.nrrd) beside ct.nrrd. Every image is
resampled onto the grid of the first one; everything is cropped to the body (plus
the possible-dose mask) to save memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from DoseSegLib.core.alignment import align_case, body_mask, resample
from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume, mask_box
from DoseSegLib.io.patient import read_patient, read_volume
from DoseSegLib.models.common import patient_cache
from DoseSegLib.models.common.arrays import BOX_MARGIN, ct_window, pad_to
from DoseSegLib.models.dose.inputs import dose_input_channels

CT_IMAGE = "ct.nrrd"
AIR_HU = -1024.0
@dataclass
class InputSpec:
    """How the network's input channels are made from a patient's images.

    Attributes:
        images: file names in the patient folder; the first one defines the grid.
        ct_windows: HU windows of the CT, each clipped and scaled to [-1, 1] as one
            channel. Other images are z-scored over the body.
    """

    images: tuple[str, ...] = (CT_IMAGE,)
    ct_windows: tuple[tuple[float, float], ...] = ((-1024.0, 1024.0),)

    def to_dict(self) -> dict:
        return {"images": list(self.images), "ct_windows": [list(w) for w in self.ct_windows]}

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(tuple(data["images"]), tuple(tuple(w) for w in data["ct_windows"]))

    @property
    def channels(self) -> int:
        return sum(len(self.ct_windows) if is_ct(name) else 1 for name in self.images)


def is_ct(image: str) -> bool:
    return image.lower() == CT_IMAGE


def read_inputs(folder: Path, spec: InputSpec) -> tuple[Case, list[Volume]]:
    """The aligned case (on the first image's grid) and the spec's images on that grid."""
    case = read_patient(folder)
    if not is_ct(spec.images[0]):
        case = replace(case, ct=read_volume(folder / spec.images[0]))
    case = align_case(case)
    images = [case.ct]
    for name in spec.images[1:]:
        fill = AIR_HU if is_ct(name) else 0.0
        images.append(resample(read_volume(folder / name), case.ct, "linear", fill))
    return case, images


def region_mask(case: Case) -> np.ndarray:
    """Where to segment: the body found on the grid image, joined with the possible-dose mask."""
    return body_mask(case.ct).array | case.require_possible_dose_mask().array


def input_channels(images: list[Volume], spec: InputSpec, region: np.ndarray) -> np.ndarray:
    """Float32 ``(spec.channels, X, Y, Z)``: CT windows scaled to [-1, 1], other images z-scored in ``region``."""
    channels = []
    for name, image in zip(spec.images, images, strict=True):
        values = image.array.astype(np.float32)
        if is_ct(name):
            for low, high in spec.ct_windows:
                channels.append(ct_window(values, low, high) * 2 - 1)
        else:
            inside = values[region]
            channels.append((values - inside.mean()) / max(float(inside.std()), 1e-6))
    return np.stack(channels)


def pad_channels(array: np.ndarray, shape: tuple[int, ...], fill: np.ndarray | None = None) -> np.ndarray:
    """Pad channels-first ``array`` at the end of each spatial axis to ``shape``.

    Args:
        fill: value of each channel in the padding (default: the channel's minimum).
    """
    pads = [(0, max(0, s - n)) for s, n in zip(shape, array.shape[1:], strict=True)]
    if not any(after for _, after in pads):
        return array
    fill = array.min(axis=(1, 2, 3)) if fill is None else fill
    return np.stack([np.pad(c, pads, constant_values=v) for c, v in zip(array, fill, strict=True)])


def prepare_sample(folder: Path, spec: InputSpec, labels: tuple[str, ...], dose_inputs: bool) -> dict[str, np.ndarray]:
    """Arrays of one training patient, cropped to its region box.

    Returns:
        image (float16, channels), labels (uint8, one per label), present (bool per label:
        whether the patient has that structure; absent ones are not scored), box
        ((3, 2) start/stop on the grid) and, when ``dose_inputs``, the dose network's
        input channels (float16).
    """
    case, images = read_inputs(folder, spec)
    region = region_mask(case)
    box = mask_box(region, BOX_MARGIN)
    empty = np.zeros(region[box].shape, bool)
    sample: dict[str, np.ndarray] = {
        "image": input_channels(images, spec, region)[(slice(None), *box)].astype(np.float16),
        "labels": np.stack([case.structures[n].array[box] if n in case.structures else empty for n in labels])
        .astype(np.uint8),
        "present": np.array([n in case.structures for n in labels]),
        "box": np.array([[s.start, s.stop] for s in box]),
    }
    if dose_inputs:
        sample["dose_inputs"] = dose_input_channels(case)[(slice(None), *box)].astype(np.float16)
    return sample


def build_cache(folders: list[Path], cache_dir: Path, spec: InputSpec, labels: tuple[str, ...],
                dose_inputs: bool, workers: int = 2) -> list[Path]:
    """Prepare every patient once (in parallel); the file names carry a key of the options."""
    key = patient_cache.options_key([spec.to_dict(), list(labels), dose_inputs])
    prepare = partial(prepare_sample, spec=spec, labels=labels, dose_inputs=dose_inputs)
    return patient_cache.build_cache(folders, cache_dir, prepare, key, workers)


def _patch_start(labels: np.ndarray, patch: tuple[int, int, int], rng: np.random.Generator,
                 foreground: float, label_weights: np.ndarray | None = None) -> list[int]:
    """Corner of a random patch; with probability ``foreground`` centred on a voxel of a random label.

    The label is drawn among those the sample contains, with probability proportional
    to ``label_weights`` (uniform when None).
    """
    size = labels.shape[1:]
    found = np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1))
    if len(found) and rng.random() < foreground:
        weights = np.ones(len(found)) if label_weights is None else np.asarray(label_weights, float)[found]
        voxels = np.argwhere(labels[rng.choice(found, p=weights / weights.sum())])
        centre = voxels[rng.integers(len(voxels))]
        return [int(np.clip(c - p // 2, 0, max(n - p, 0))) for c, p, n in zip(centre, patch, size, strict=True)]
    return [int(rng.integers(0, max(n - p, 0) + 1)) for n, p in zip(size, patch, strict=True)]


def balanced_label_weights(samples: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Per label, 1 / (number of samples that have it): rare structures get centred as often as common ones."""
    counts = np.sum([s["present"] for s in samples], axis=0)
    return 1.0 / np.maximum(counts, 1)


def random_patch(sample: dict[str, np.ndarray], patch: tuple[int, int, int], rng: np.random.Generator,
                 foreground: float = 0.0, label_weights: np.ndarray | None = None,
                 truncate: float = 0.0) -> dict[str, torch.Tensor]:
    """A random ``patch``-sized crop of a sample's arrays (padded where the box is smaller).

    Args:
        foreground: probability of centring the patch on a voxel of a random label.
        label_weights: relative chance of each label to be the centre (see :func:`balanced_label_weights`).
        truncate: probability of ending the patch at a random axial plane (at least a quarter
            of its height kept) and padding above it as beyond the scan: a scan whose field
            of view stops short of the skull top.
    """
    start = _patch_start(sample["labels"], patch, rng, foreground, label_weights)
    stop = [s + p for s, p in zip(start, patch, strict=True)]
    if rng.random() < truncate:
        stop[2] = start[2] + int(rng.integers(patch[2] // 4, patch[2]))
    crop = (slice(None), *(slice(a, b) for a, b in zip(start, stop, strict=True)))
    labels = sample["labels"][crop].astype(np.float32)
    arrays = {
        "image": pad_channels(sample["image"][crop].astype(np.float32), patch, sample["image"].min(axis=(1, 2, 3))),
        "labels": np.pad(labels, [(0, 0)] + [(0, p - n) for p, n in zip(patch, labels.shape[1:], strict=True)]),
    }
    if "dose_inputs" in sample:
        arrays["dose_inputs"] = pad_to(sample["dose_inputs"][crop].astype(np.float32), patch)[0]
    patch_arrays = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}
    patch_arrays["present"] = torch.from_numpy(sample["present"].copy())
    return patch_arrays
