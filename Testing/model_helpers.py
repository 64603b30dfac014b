"""Tiny randomly initialised networks for the tests that run a dose model end to end."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from DoseSegLib.core.case import OARS
from DoseSegLib.models.common.training_loop import save_weights
from DoseSegLib.models.dose.net import DoseNet
from DoseSegLib.models.dose.refine_net import RefineNet, RefineNetConfig

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "DoseSeg") not in sys.path:  # the tiny models live in the Slicer module's test library
    sys.path.insert(0, str(REPO / "DoseSeg"))

from DoseSegTestLib.tinymodels import TINY_PATCH, catalogueEntry, tinyDoseConfig, writeTinyCatalogue  # noqa: E402

TINY_REFINER = RefineNetConfig(channels=(4, 8, 16), strides=(2, 2))
CLINIC_SHAPE, CLINIC_SPACING = (40, 40, 32), (4.5, 5.0, 3.0)  # the phantoms of a clinic's own model's tests
CLINIC_MODEL = "clinic-hn-test"  # the name they publish it under
tiny_dose_config = tinyDoseConfig  # the tests' names for DoseSegTestLib.tinymodels's helpers
write_tiny_catalogue = writeTinyCatalogue


def fake_segmentation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A catalogue segmentation entry and a stand-in segmentation module returning the phantom's own OARs."""
    from DoseSegLib.io.phantom import make_phantom
    from DoseSegLib.models.common.catalogue import ModelEntry

    entry = {"name": "fake-seg", "task": "segmentation", "file": "none.pt", "sha256": "0" * 64, "version": "9"}
    write_tiny_catalogue(tmp_path / "models", (entry,))
    module = types.ModuleType("DoseSegLib.models.seg.predict")
    model = types.SimpleNamespace(entry=ModelEntry(**{**entry, "file": Path("none.pt")}), labels=OARS)
    module.load_segmentation_model = lambda name, device: model
    module.segment_case = lambda seg_model, case, tta=False: {
        name: mask for name, mask in make_phantom(shape=(40, 40, 32)).structures.items() if name in OARS
    }
    monkeypatch.setitem(sys.modules, "DoseSegLib.models.seg.predict", module)


def write_refiner_catalogue(folder: Path, gain: float = 0.5) -> Path:
    """A catalogue with a tiny base dose model and a tiny refiner of it (the default)."""
    torch.manual_seed(0)
    save_weights(folder / "base.pt", DoseNet(tiny_dose_config(dropout=0.0)), {"patch": TINY_PATCH})
    refiner = RefineNet(TINY_REFINER)
    with torch.no_grad():
        refiner.gain.fill_(gain)
    save_weights(folder / "refiner.pt", refiner, {"patch": [32, 32, 16], "base_model": "base"})
    rows = [catalogueEntry(folder, "base", "base.pt"),
            catalogueEntry(folder, "refined", "refiner.pt", default=True, base="base")]
    (folder / "catalogue.json").write_text(json.dumps({"models": rows}))
    return folder


def write_tiny_convention(folder: Path, metric: str = "mean", ratio: float = 1.0) -> Path:
    """A prescription convention (``<model>.prescription.json``) beside the tiny catalogue's weights."""
    from DoseSegLib.models.common.catalogue import sha256_of

    path = folder / "tiny-dose.prescription.json"
    path.write_text(json.dumps({"metric": metric, "ratio": ratio, "sha256": sha256_of(folder / "tiny_dose.pt")}))
    return path


def predict_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dose model predicts the patient's own reference dose (a network trained on plans like it)."""
    import DoseSegLib.models.dose.predict as predict

    monkeypatch.setattr(predict, "predict_case_dose", lambda model, case, tta=False: case.require_dose())
