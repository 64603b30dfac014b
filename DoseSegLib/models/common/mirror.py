"""Left-right mirroring across the patient's mid-sagittal plane: paired structures swap channels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

_SIDES = (("Right", "Left"), ("Left", "Right"))
_SUFFIXES = (("_R", "_L"), ("_L", "_R"))


def mirrored_name(name: str) -> str | None:
    """The name of the same structure on the other side, or None for a midline structure."""
    for side, other in _SIDES:
        if name.startswith(side):
            return other + name[len(side):]
    for side, other in _SUFFIXES:
        if name.endswith(side):
            return name[: -len(side)] + other
    return None


def lateral_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of names that are the left and right of one structure, each pair once."""
    index = {name: i for i, name in enumerate(names)}
    pairs: set[tuple[int, int]] = set()
    for i, name in enumerate(names):
        other = mirrored_name(name)
        if other is not None and other in index:
            pairs.add((min(i, index[other]), max(i, index[other])))
    return sorted(pairs)


def swap_pairs(tensor: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """``tensor`` with the channels (first axis) of each index pair exchanged."""
    order = list(range(tensor.shape[0]))
    for a, b in pairs:
        order[a], order[b] = b, a
    return tensor[order]
