"""Self-supervised patient features: the latent vector of the bundled autoencoder (console API and CLI step).

Usage: ``row = feature_row(load_features_model(), read_patient(folder))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from DoseSegLib.analysis.ctcheck import check_ct
from DoseSegLib.analysis.radiomics import radiomics_table
from DoseSegLib.analysis.site import check_site
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.options import Device
from DoseSegLib.io.patient import ct_source, read_patient
from DoseSegLib.io.tables import Row
from DoseSegLib.models.common.handle import ModelHandle
from DoseSegLib.models.features.data import FeatureInputs, prepare_inputs

if TYPE_CHECKING:
    import torch

    from DoseSegLib.models.common.net_config import StoredConfig
    from DoseSegLib.models.features.net import FeatureNet

FIGURE_CHANNELS = ("ct[-1024:1024]", "targets", "dose")


@dataclass
class FeatureModel(ModelHandle):
    """A loaded autoencoder with its input spec."""

    TASK = "features"

    net: FeatureNet
    inputs: FeatureInputs

    @staticmethod
    def network_classes() -> tuple[type[torch.nn.Module], type[StoredConfig]]:
        from DoseSegLib.models.features.net import FeatureNet, FeatureNetConfig

        return FeatureNet, FeatureNetConfig

    @staticmethod
    def from_meta(meta: dict) -> dict:
        return {"inputs": FeatureInputs.from_dict(meta["inputs"])}


def load_features_model(name: str | None = None, device: Device | str = Device.AUTO,
                        weights: Path | None = None) -> FeatureModel:
    """A feature autoencoder (see :meth:`ModelHandle.load`)."""
    return FeatureModel.load(name, device, weights)


def _run(model: FeatureModel, image: np.ndarray, decode: bool) -> np.ndarray:
    import torch

    model.net.eval()
    with torch.no_grad():
        x = torch.from_numpy(image[None]).to(model.device)
        result = model.net(x) if decode else model.net.encode(x)
    return result[0].float().cpu().numpy()


def case_features(model: FeatureModel, case: Case) -> np.ndarray:
    """The latent feature vector (float32) of a case as read (see :func:`features_data.prepare_inputs`)."""
    return _run(model, prepare_inputs(case, model.inputs)["image"], decode=False)


def feature_row(model: FeatureModel, case: Case) -> Row:
    """``{"patient": name, "ae_00": ..., "ae_15": ...}`` for one case."""
    values = case_features(model, case)
    return {"patient": case.name, **{f"ae_{i:02d}": float(v) for i, v in enumerate(values)}}


def features_tables(model: FeatureModel, folders: Sequence[Path], radiomics: bool = False,
                    classes: Sequence[str] | None = None, mapper: NameMapper | None = None,
                    failures: list[tuple[Path, str]] | None = None, any_site: bool = False
                    ) -> tuple[list[Row], list[Row]]:
    """One feature row per patient folder, and (with ``radiomics``) each structure's radiomics row joined to it.

    Args:
        folders: patient folders (ct.nrrd, structures/ with at least one PTV, dose.nrrd if the model uses it).
        radiomics: also compute pyradiomics features of every structure on the aligned case.
        classes: pyradiomics feature classes (see ``radiomics.make_extractor``).
        mapper: structure-name mapping (default aliases when None).
        failures: when given, a patient that fails is appended as (folder, error) and the others go on;
            otherwise its error is raised.
        any_site: describe patients without head-and-neck organs too (noted in their row).
    """
    from tqdm import tqdm

    features, joined = [], []
    for folder in tqdm(folders, desc="features", unit="patient", disable=len(folders) < 2):
        try:
            case = read_patient(folder, mapper)
            check_ct(case.ct, ct_source(folder, case))
            site_note = check_site(case, any_site)
            row = {**feature_row(model, case), **({"note": site_note} if site_note else {})}
            if radiomics:
                aligned = align_case(case)
                structures = radiomics_table(aligned.ct, aligned.structures, classes)
                joined += [{"patient": case.name, **structure, **row} for structure in structures]
        except DoseSegError as exc:
            if failures is None:
                raise
            failures.append((folder, str(exc)))
            continue
        features.append(row)
    return features, joined


def reconstruction_png(model: FeatureModel, case: Case, channels: Sequence[str] = FIGURE_CHANNELS) -> bytes:
    """A PNG of input and reconstruction on the fixed grid, one row per channel (coronal plane through the targets)."""
    from DoseSegLib.viz.figures import lps_oriented, new_figure, plane, png_bytes

    sample = prepare_inputs(case, model.inputs)
    output = _run(model, sample["image"], decode=True)
    names = model.inputs.channel_names
    targets, _ = lps_oriented(sample["grid"].with_array(sample["image"][names.index("targets")]))
    index = int(np.argmax(targets.sum(axis=(0, 2))))  # the coronal plane holding most target
    shown = [c for c in channels if c in names]
    figure = new_figure(6, 2.6 * len(shown))
    figure.suptitle(f"{case.name}: autoencoder input and reconstruction", fontsize=10)
    axes = figure.subplots(len(shown), 2, squeeze=False)
    for row, name in zip(axes, shown, strict=True):
        for ax, array, title in zip(row, (sample["image"], output), ("input", "reconstruction"), strict=True):
            oriented, spacing = lps_oriented(sample["grid"].with_array(array[names.index(name)]))
            image, extent = plane(oriented, spacing, "coronal", index)
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=extent)
            ax.set_title(f"{name} {title}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    return png_bytes(figure)
