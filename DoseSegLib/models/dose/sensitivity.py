"""Where a contour edit moves a dose metric: d metric / d mask voxel through the frozen dose
network (and its refiner, when the model has one: it takes the base dose and the same inputs,
both differentiable) and the DVH, by autograd over a soft (real-valued) mask.

The mask enters the network's inputs differentiably:

- an OAR's channel is its mask itself;
- the targets channel is max over targets of Rx/70 * mask, linear in the edited target's mask;
- the target-proximity channel, Rx/70 * exp(-d / 15 mm) with d a Euclidean distance map, is
  not differentiable; its stand-in, equal to it at the current mask, is
  ``prox * (1 + (K * m - K * m0) / (K * m0))`` outside the target, where ``K`` is the kernel
  exp(-r / 15 mm) (FFT convolution), plus the voxel's own jump to Rx/70 when it joins the
  target. For a flat surface its derivative is within a factor 2 of the distance map's
  (exact far from the surface, half at it). It is the derivative of *adding* voxels (a voxel
  already in the target moves nothing through this channel).

The metric is taken over the structure's dose-grid voxels with the soft mask as weights:
``Mean[Gy]`` = sum(dose * m) / sum(m); a near-maximum dose ``Dx%[Gy]`` or ``Dx cc[Gy]``
(e.g. D2%, D0.03cc) through a soft quantile: the dose D with sum(m * sigmoid((dose - D) / tau))
equal to the volume, differentiated by the implicit-function theorem (tau = 0.5 Gy). That
derivative describes edits of fewer voxels than the metric's tail (x % of the volume, x cc):
a larger edit of hot voxels saturates the quantile at their own dose (docs/console_api.md,
the finite-difference limits measured on a validation patient).
A dose normalised to the prescription (``Problem.normalised``: the primary target's metric T scaled
to a fixed dose G) has metric G x m / T; its derivative includes the factor's change (zero for T itself).
The network's parameters are frozen (requires_grad False; no torch.no_grad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

from DoseSegLib.analysis import metric_names as mn
from DoseSegLib.core.case import target_prescription
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.models.common.arrays import REFERENCE_GY, inference_shape, pad_to
from DoseSegLib.models.dose.inputs import PROXIMITY_MM
from DoseSegLib.models.dose.live_inputs import PROXIMITY, TARGETS, LiveInputs, oar_channel
from DoseSegLib.models.dose.predict import DoseModel
from DoseSegLib.models.dose.refine_net import refine_inputs

if TYPE_CHECKING:
    from DoseSegLib.models.dose.net import DoseNet
    from DoseSegLib.models.dose.refine_net import RefineNet

QUANTILE_TAU_GY = 0.5
KERNEL_REACH = 3.0  # the proximity kernel is cut at this many decay lengths
METRIC_ALIASES = {"mean": mn.MEAN}


def differentiable_metric(text: str) -> tuple[str, float, str]:
    """(TG-263 name, x, kind) of a metric with a derivative: ``Mean[Gy]`` (``mean``), ``Dx%[Gy]``, ``Dxcc[Gy]``."""
    try:
        name, unit = mn.canonical_metric(METRIC_ALIASES.get(text.strip().lower(), text))
    except ValueError as exc:
        raise DoseSegError(str(exc)) from None
    if name == mn.MEAN:
        return name, 0.0, "mean"
    if unit == "Gy" and name.endswith("cc[Gy]") and name.startswith("D"):
        return name, float(name[1:-len("cc[Gy]")]), "cc"
    if unit == "Gy" and name.endswith("%[Gy]") and name.startswith("D"):
        return name, float(name[1:-len("%[Gy]")]), "pct"
    raise DoseSegError(f"metric '{text}' has no derivative here: use Mean[Gy] (mean), a near-maximum "
                       "Dx%[Gy] (e.g. D2%) or Dx cc[Gy] (e.g. D0.03cc); Max and Min are a single voxel's dose")


@dataclass
class Problem:
    """What to differentiate: the metric of ``structure`` with respect to the mask of ``wrt``."""

    structure: str
    metric: str
    wrt: str
    masks: dict[str, np.ndarray]  # current masks on the network's grid, by name
    voxel_cc: float
    # the dose normalised: (primary target, its normalisation metric, the Gy that metric is scaled to)
    normalised: tuple[str, str, float] | None = None


def _kernel(spacing: tuple[float, ...]) -> torch.Tensor:
    reach = [int(np.ceil(KERNEL_REACH * PROXIMITY_MM / s)) for s in spacing]
    axes = [torch.arange(-r, r + 1, dtype=torch.float32) * s for r, s in zip(reach, spacing, strict=True)]
    grids = torch.meshgrid(*axes, indexing="ij")
    squared = grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2  # the grid is 3D
    return torch.exp(-torch.sqrt(squared) / PROXIMITY_MM)


def fft_convolve(volume: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """'Same'-size linear convolution of a 3-D tensor with an odd-sized symmetric kernel (zero padded)."""
    shape = [n + k - 1 for n, k in zip(volume.shape, kernel.shape, strict=True)]
    full = torch.fft.irfftn(torch.fft.rfftn(volume, shape) * torch.fft.rfftn(kernel, shape), shape)
    start = [k // 2 for k in kernel.shape]
    return full[tuple(slice(s, s + n) for s, n in zip(start, volume.shape, strict=True))]


def soft_target_channels(
    inputs: LiveInputs, name: str, m: torch.Tensor, box: tuple[slice, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The targets and proximity channels in ``box`` as functions of target ``name``'s soft mask ``m``."""
    weight = LiveInputs.level(name) / REFERENCE_GY
    others = [n for n in inputs.masks if n != name]
    others_w = np.zeros(m.shape, np.float32)
    for other in others:
        others_w = np.maximum(others_w, inputs.masks[other][box] * (LiveInputs.level(other) / REFERENCE_GY))
    others_p = np.maximum.reduce([inputs.proximity[n][box] for n in others]) if others else np.zeros(m.shape)
    weights_t, proximity_t = torch.from_numpy(others_w), torch.from_numpy(others_p.astype(np.float32))
    mask0 = torch.from_numpy(inputs.masks[name][box].astype(np.float32))
    weighted = weights_t + (weight - weights_t).clamp(min=0) * m
    kernel = _kernel(inputs.spacing)
    near0 = fft_convolve(mask0, kernel)
    outside = (mask0 < 0.5) & (near0 > 1e-3)
    prox0 = torch.from_numpy(inputs.proximity[name][box])
    relative = torch.where(outside, (fft_convolve(m, kernel) - near0) / near0.clamp(min=1e-3), 0.0)
    own = prox0 * (1 + relative) + (weight - prox0) * (1 - mask0) * (m - mask0)
    return weighted, torch.maximum(proximity_t, own)


def soft_inputs(inputs: LiveInputs, name: str, m: torch.Tensor, box: tuple[slice, ...]) -> torch.Tensor:
    """The network's channels in ``box`` (1, C, ...) with structure ``name`` given by soft mask ``m``."""
    x = torch.from_numpy(inputs.channels[(slice(None), *box)].copy())
    if name in inputs.oars:
        x[oar_channel(name, inputs.oars)] = m
    elif target_prescription(name) is not None:
        x[TARGETS], x[PROXIMITY] = soft_target_channels(inputs, name, m, box)
    return x[None]


def _pad(x: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """``pad_to`` of box inputs (1, C, ...) that keeps their gradient (the padding is constant)."""
    pads = [p for n, s in zip(reversed(x.shape[2:]), reversed(shape), strict=True) for p in (0, s - n)]
    constant, region = pad_to(x[0].detach().numpy(), shape)
    return torch.from_numpy(constant)[None] + (F.pad(x, pads) - F.pad(x.detach(), pads)), region


def network_dose(net: DoseNet, x: torch.Tensor, roi: tuple[int, int, int]) -> torch.Tensor:
    """Differentiable dose (Gy) of channels-first box inputs (1, C, ...), as ``predict_box`` without TTA."""
    from monai.inferers import sliding_window_inference

    padded, region = _pad(x, inference_shape(tuple(x.shape[2:]), roi, net.config.size_multiple))
    device = next(net.parameters()).device
    raw = cast(torch.Tensor, sliding_window_inference(padded.to(device), roi, 4, net, overlap=0.25, mode="gaussian"))
    dose = torch.relu(raw.cpu()) * (padded[:, -1:] > 0.5)
    return dose[0, 0][region]


def refined_dose(refiner: RefineNet, first: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Differentiable refined dose (Gy) of a box, as ``refine_box``: base dose ``first`` (box shape), inputs ``x``."""
    multiple = refiner.config.size_multiple
    padded, region = _pad(x, tuple(-(-n // multiple) * multiple for n in x.shape[2:]))
    pads = [p for n, s in zip(reversed(first.shape), reversed(padded.shape[2:]), strict=True) for p in (0, s - n)]
    device = next(refiner.parameters()).device
    inputs = cast(torch.Tensor, refine_inputs(F.pad(first, pads)[None, None], padded))  # tensors in, tensor out
    dose = refiner(inputs.to(device)).cpu()
    return dose[0, 0][region]


def model_dose(model: DoseModel, x: torch.Tensor) -> torch.Tensor:
    """Differentiable dose (Gy) of box inputs through the model's network and its refiner, if any."""
    dose = network_dose(model.net, x, model.patch)
    return dose if model.refiner is None else refined_dose(model.refiner, dose, x)


def soft_metric(dose: torch.Tensor, weights: torch.Tensor, metric: str, voxel_cc: float) -> torch.Tensor:
    """A DVH metric of ``dose`` over a soft mask ``weights`` (see the module's docstring)."""
    _, x, kind = differentiable_metric(metric)
    total = weights.sum()
    if kind == "mean":
        return (dose * weights).sum() / total
    with torch.no_grad():
        order = torch.argsort(dose[weights > 0.5], descending=True)
        hot = dose[weights > 0.5][order]
        count = x / voxel_cc if kind == "cc" else x / 100 * hot.numel()
        d0 = hot[min(max(int(np.ceil(count)) - 1, 0), hot.numel() - 1)]
    target = x / voxel_cc if kind == "cc" else x / 100 * total
    level = torch.sigmoid((dose - d0) / QUANTILE_TAU_GY)
    excess = (weights * level).sum() - target
    slope = (weights * level * (1 - level)).sum().detach() / QUANTILE_TAU_GY
    return d0 + (excess - excess.detach()) / slope.clamp(min=1e-6)


def mask_sensitivity(model: DoseModel, inputs: LiveInputs, box: tuple[slice, ...], problem: Problem) -> np.ndarray:
    """d metric / d mask voxel (Gy per voxel) of ``problem`` on the network's grid (float32), through
    the dose network and the refiner when the model has one."""
    networks = [model.net] if model.refiner is None else [model.net, model.refiner]
    for net in networks:
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        net.eval()
    shape = next(iter(problem.masks.values())).shape
    m = torch.from_numpy(problem.masks[problem.wrt].astype(np.float32)).requires_grad_(True)
    dose = torch.zeros(shape)
    dose[box] = model_dose(model, soft_inputs(inputs, problem.wrt, m[box], box))
    def weights(name: str) -> torch.Tensor:
        return m if name == problem.wrt else torch.from_numpy(problem.masks[name].astype(np.float32))

    value = soft_metric(dose, weights(problem.structure), problem.metric, problem.voxel_cc)
    if problem.normalised is not None:
        target, metric, gy = problem.normalised
        value = value * gy / soft_metric(dose, weights(target), metric, problem.voxel_cc)
    value.backward()
    assert m.grad is not None  # m requires a gradient
    return m.grad.numpy().astype(np.float32)
