"""The library's option vocabularies: one enum per family, checked where a caller hands a value in.

A value may be given as the enum member or its text (``"voxel"``, as on the command line); an
unknown text is a :class:`DoseSegError` naming the valid values and the closest one (as MONAI's
``look_up_option`` does)::

    DvhMethod.parse("voxels")  # DoseSegError: unknown DVH method 'voxels' (one of auto, voxel; did you mean 'voxel'?)
"""

from __future__ import annotations

import difflib
from enum import Enum
from typing import TypeVar

from DoseSegLib.core.errors import DoseSegError

__all__ = ["Device", "DvhMethod", "Option", "SegLoss", "StructureSource"]

OptionT = TypeVar("OptionT", bound="Option")


class Option(str, Enum):
    """An option whose members compare, print and serialise (JSON, CSV) as their text."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def choices(cls) -> tuple[str, ...]:
        """The valid texts, in declaration order (for argparse ``choices``)."""
        return tuple(str(member.value) for member in cls)

    @classmethod
    def parse(cls: type[OptionT], value: str | OptionT) -> OptionT:
        """The member named by ``value``; a DoseSegError naming the valid values and the closest one."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            pass
        choices = cls.choices()
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise DoseSegError(f"unknown {_LABELS.get(cls, cls.__name__)} '{value}' (one of {', '.join(choices)}{hint})")


class DvhMethod(Option):
    """How a structure's dose is sampled (see ``analysis.sampling``)."""

    AUTO = "auto"  # partial volume: the structure on its own finer grid, small ones oversampled
    VOXEL = "voxel"  # dose-grid voxels only


class Device(Option):
    """Where the models run."""

    AUTO = "auto"  # CUDA when available, else the CPU
    CPU = "cpu"
    CUDA = "cuda"


class SegLoss(Option):
    """The segmentation training loss."""

    BCE_DICE = "bce_dice"
    DOSELO = "doselo"  # BCE + soft Dice + lambda * dose MSE through a frozen dose network


class StructureSource(Option):
    """Where a structure of a run came from (summary.json's ``structures``)."""

    PATIENT = "patient"  # the patient's own contours
    AUTO = "auto"  # drawn by the segmentation model


_LABELS: dict[type[Option], str] = {DvhMethod: "DVH method", Device: "device", SegLoss: "loss",
                                  StructureSource: "structure source"}  # in messages
