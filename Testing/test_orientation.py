"""Laterality. A patient stored with permuted or reversed axes gets the same
segmentation and dose in physical space (the networks see one canonical voxel order).

Stored variants are made with SimpleITK (PermuteAxes, Flip) and results are compared after
SimpleITK's own physical-space resampling back onto the original grid: outside references.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import Case
from DoseSegLib.core.orientation import Reorientation
from DoseSegLib.core.volume import Volume, crop_to_content
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.phantom import make_phantom

ORIENTATIONS = [(perm, flips) for perm in itertools.permutations(range(3))
                for flips in itertools.product((False, True), repeat=3)]
# 8 for the default suite: identity, each axis reversed, all reversed, and three permutations.
DEFAULT = [((0, 1, 2), (False, False, False)), ((0, 1, 2), (True, False, False)),
           ((0, 1, 2), (False, True, False)), ((0, 1, 2), (False, False, True)),
           ((0, 1, 2), (True, True, True)), ((1, 0, 2), (False, False, False)),
           ((2, 0, 1), (True, False, False)), ((2, 1, 0), (False, True, True))]


def stored(volume: Volume, perm: tuple[int, ...], flips: tuple[bool, ...]) -> Volume:
    """The same physical image stored with permuted / reversed axes (by SimpleITK)."""
    import SimpleITK as sitk

    image = sitk.Flip(sitk.PermuteAxes(volume.to_sitk(), list(perm)), list(flips))
    result = Volume.from_sitk(image)
    return result.with_array(result.array.astype(bool)) if volume.array.dtype == bool else result


def stored_case(case: Case, perm: tuple[int, ...], flips: tuple[bool, ...]) -> Case:
    def move(v: Volume | None) -> Volume | None:
        return None if v is None else stored(v, perm, flips)

    return replace(case, ct=move(case.ct), dose=move(case.dose), possible_dose_mask=move(case.possible_dose_mask),
                   structures={n: move(m) for n, m in case.structures.items()})


def on_grid(volume: Volume, grid: Volume) -> np.ndarray:
    """``volume`` resampled by SimpleITK (nearest neighbour, physical space) onto ``grid``."""
    import SimpleITK as sitk

    moved = sitk.Resample(volume.to_sitk(), grid.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return Volume.from_sitk(moved).array


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 1.0 if not (a.any() or b.any()) else 2 * (a & b).sum() / (a.sum() + b.sum())


# --- the reorientation itself (every orientation, synthetic) ------------------------------------------------

@pytest.mark.parametrize("perm, flips", ORIENTATIONS)
def test_every_stored_orientation_comes_back_to_the_canonical_image(perm: tuple, flips: tuple) -> None:
    rng = np.random.default_rng(0)
    original = Volume(rng.normal(size=(7, 5, 4)).astype(np.float32), (1.0, 2.0, 3.0), (-10.0, 5.0, 30.0))
    variant = stored(original, perm, flips)
    orientation = Reorientation.of(variant)
    canonical = orientation.to_canonical(variant)
    np.testing.assert_array_equal(canonical.array, original.array)
    assert canonical.same_grid(original)
    back = orientation.from_canonical(canonical, variant)
    np.testing.assert_array_equal(back.array, variant.array)
    assert back.same_grid(variant)
    channels = np.stack([variant.array, -variant.array])
    np.testing.assert_array_equal(orientation.array_to_canonical(channels)[1], -original.array)


def test_sitk_variants_are_the_same_physical_image() -> None:
    """The test's own premise: SimpleITK's permuted/flipped copies keep every voxel where it was."""
    original = Volume(np.arange(60, dtype=np.float32).reshape(5, 4, 3), (1.0, 2.0, 3.0), (1.0, 2.0, 3.0))
    for perm, flips in ORIENTATIONS:
        np.testing.assert_array_equal(on_grid(stored(original, perm, flips), original), original.array)


# --- the networks: a left-right mirrored phantom keeps Left and Right -----------------------------------------

class _SidesNet(torch.nn.Module):
    """A stand-in segmenter whose canonical behaviour is known: body voxels in the half of the window
    towards +i (patient left in canonical order) are LeftParotid, the others RightParotid."""

    class config:  # the attribute the inference reads
        size_multiple = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = x[:, :1] > 0.3
        left = torch.zeros_like(body)
        left[:, :, x.shape[2] // 2:] = True
        return torch.cat([body & left, body & ~left], dim=1).float() * 20 - 10


def _sides_model():
    from DoseSegLib.models.seg.data import InputSpec
    from DoseSegLib.models.seg.predict import SegModel

    return SegModel(net=_SidesNet(), device=torch.device("cpu"), entry=None, labels=("LeftParotid", "RightParotid"),
                    thresholds={"LeftParotid": 0.5, "RightParotid": 0.5},
                    inputs=InputSpec(("ct.nrrd",), ((-1024.0, 1024.0),)), patch=(64, 64, 48))


def _centroid_lps(mask: Volume) -> np.ndarray:
    return (mask.index_to_lps @ np.append(np.argwhere(mask.array).mean(axis=0), 1.0))[:3]


@pytest.mark.parametrize("perm, flips", DEFAULT)
def test_mirrored_phantom_keeps_left_and_right(perm: tuple, flips: tuple) -> None:
    from DoseSegLib.models.seg.predict import segment_case

    phantom = make_phantom()
    variant = stored_case(phantom, perm, flips)
    masks = segment_case(_sides_model(), variant, single_component=False)
    left, right = _centroid_lps(masks["LeftParotid"]), _centroid_lps(masks["RightParotid"])
    assert left[0] > right[0]  # LPS: +x is the patient's left
    reference = segment_case(_sides_model(), phantom, single_component=False)
    for name in masks:
        assert dice(on_grid(masks[name], phantom.ct), reference[name].array) >= 0.99


def test_mirrored_phantom_dose_is_the_same_in_physical_space(bundled_dose) -> None:
    from DoseSegLib.models.dose.predict import predict_case_dose

    phantom = make_phantom()
    reference = predict_case_dose(bundled_dose, phantom)
    for perm, flips in (((0, 1, 2), (True, False, False)), ((2, 0, 1), (True, False, True))):
        dose = predict_case_dose(bundled_dose, stored_case(phantom, perm, flips))
        assert np.abs(on_grid(dose, phantom.ct) - reference.array).max() <= 0.5


# --- a real validation patient with the bundled models --------------------------------------------------------

@pytest.fixture(scope="module")
def bundled_dose():
    from DoseSegLib.models.dose.predict import load_dose_model

    return load_dose_model(device="cpu")


@pytest.fixture(scope="module")
def bundled_seg():
    from DoseSegLib.models.seg.predict import load_segmentation_model

    return load_segmentation_model(None, "cpu")


def _real_patient(shared_data: Path) -> Case:
    return align_case(read_patient(shared_data / "openkbp" / "validation" / "pt_201"))


def _head_crop(case: Case) -> Case:
    """The parotid-to-larynx region of the patient (a quarter of the voxels, to keep the default suite fast)."""
    union = np.zeros(case.ct.shape, bool)
    for name in ("RightParotid", "LeftParotid", "Larynx", "Mandible"):
        union |= case.structures[name].array
    lo, hi = np.argwhere(union).min(axis=0), np.argwhere(union).max(axis=0)
    box = np.zeros_like(union)
    box[tuple(slice(max(a - 6, 0), b + 7) for a, b in zip(lo, hi))] = True

    def crop(v: Volume) -> Volume:
        return crop_to_content(v, box)

    return replace(case, ct=crop(case.ct), dose=crop(case.dose), possible_dose_mask=crop(case.possible_dose_mask),
                   structures={n: crop(m) for n, m in case.structures.items() if (m.array & box).any()})


def _check_invariance(case: Case, orientations: list, dose_model, seg_model) -> None:
    from DoseSegLib.models.dose.predict import predict_case_dose
    from DoseSegLib.models.seg.predict import segment_case

    reference_dose = predict_case_dose(dose_model, case).array
    reference_masks = segment_case(seg_model, case)
    assert dice(reference_masks["RightParotid"].array, case.structures["RightParotid"].array) > 0.5
    assert dice(reference_masks["LeftParotid"].array, case.structures["LeftParotid"].array) > 0.5
    for perm, flips in orientations:
        variant = stored_case(case, perm, flips)
        dose = predict_case_dose(dose_model, variant)
        assert dose.same_grid(variant.ct)
        assert np.abs(on_grid(dose, case.ct) - reference_dose).max() <= 0.5, (perm, flips)
        masks = segment_case(seg_model, variant)
        for name, mask in masks.items():
            assert dice(on_grid(mask, case.ct), reference_masks[name].array) >= 0.99, (perm, flips, name)


def test_real_patient_eight_orientations(shared_data: Path, bundled_dose, bundled_seg) -> None:
    _check_invariance(_head_crop(_real_patient(shared_data)), DEFAULT[1:], bundled_dose, bundled_seg)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DOSESEG_SLOW"), reason="all 48 orientations take ~5 min: set DOSESEG_SLOW=1")
def test_real_patient_all_48_orientations(shared_data: Path, bundled_dose, bundled_seg) -> None:
    _check_invariance(_head_crop(_real_patient(shared_data)), ORIENTATIONS[1:], bundled_dose, bundled_seg)
