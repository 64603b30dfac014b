"""A live what-if session: one patient and the dose model kept in memory, structures edited,
the predicted dose, DVH metrics and their sensitivity to each mask voxel recomputed at once.

    from DoseSegLib import WhatIfSession
    s = WhatIfSession("pt_201")
    s.set_mask("PTV70", bigger_ptv)          # bool array on the CT grid, [i, j, k]
    r = s.predict()                          # r.dose (Volume, Gy), r.metrics (dvh_metrics.csv rows)

Like ``predict-dose`` and ``run``, each prediction is normalised to the primary target's prescription
by the convention of the model's training plans (``normalise=False``: the network's own dose, as
``--no-normalise``); when it cannot be (no convention, no target with a known prescription, an
implausible factor), the session says why once (a logged warning, ``notes``) and shows the network's dose.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from DoseSegLib.analysis.constraints import Constraint, load_constraints
from DoseSegLib.analysis.dvh import DVH
from DoseSegLib.analysis.metric_names import canonical_metric
from DoseSegLib.analysis.normalisation import Normalisation
from DoseSegLib.analysis.plan import evaluate_plan
from DoseSegLib.core.alignment import align_case, align_structure
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.options import Device, DvhMethod
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.tables import Row
from DoseSegLib.models.dose.live_inputs import LiveInputs
from DoseSegLib.models.dose.predict import load_dose_model, predict_box_dose, prepare_case
from DoseSegLib.run.trust import TrustChecks

__all__ = ["TEXT_COLUMNS", "WhatIfResult", "WhatIfSession"]

TEXT_COLUMNS = ("structure", "original_name", "dvh_method", "note")

log = logging.getLogger(__name__)


@dataclass
class WhatIfResult:
    """One prediction of a session.

    Attributes:
        dose: predicted dose (Gy) on the CT grid.
        metrics: one row per structure, the columns of dvh_metrics.csv (numbers as floats).
        dvhs: cumulative DVH of each structure.
        goals: the clinical-goal checks (rows of constraints.csv).
        seconds: time the prediction took.
        normalisation: how ``dose`` was normalised to the prescription (None: the network's own dose).
    """

    dose: Volume
    metrics: list[Row]
    dvhs: dict[str, DVH]
    goals: list[Row]
    seconds: float
    normalisation: Normalisation | None = None

    def metric(self, structure: str, name: str) -> float:
        """One metric of one structure, e.g. ``metric("LeftParotid", "Mean[Gy]")`` (or ``mean``, ``D2%``)."""
        with contextlib.suppress(ValueError):  # a column that is no DVH metric (e.g. HI or CI) is kept as given
            name = canonical_metric("Mean[Gy]" if name.strip().lower() == "mean" else name)[0]
        for row in self.metrics:
            if row["structure"] == structure:
                if name not in row:
                    raise DoseSegError(f"no metric '{name}' for '{structure}' (have {', '.join(row)})")
                return float(row[name])
        raise DoseSegError(f"no structure '{structure}' in the session")


def _floats(row: Row) -> Row:
    return {k: (v if k in TEXT_COLUMNS or v == "" else float(v)) for k, v in row.items()}


class WhatIfSession:
    """The dose model and one patient's prepared inputs, kept in memory for edit-and-predict loops.

    Args:
        patient_dir: patient folder (as for ``doseseg predict-dose``; missing OARs are not
            auto-segmented, the network sees them as empty).
        device: ``auto``, ``cpu`` or ``cuda``.
        model: catalogue dose model name (default: the bundled default).
        weights: a train-dose best.pt instead of a catalogue model.
        names: structure-name mapping (default aliases when None).
        constraints: clinical goals (DoseSegLib's default table when None).
        normalise: normalise each prediction to the prescription, as ``predict-dose`` does by default
            (False: the network's own dose, as ``--no-normalise``).

    Attributes:
        normalisation: how the last prediction was normalised (None: not normalised).
        notes: why the dose is not normalised, each said once.
    """

    def __init__(
        self, patient_dir: str | Path, device: Device | str = Device.AUTO, model: str | None = None,
        weights: Path | None = None, names: NameMapper | None = None,
        constraints: list[Constraint] | None = None, normalise: bool = True,
    ) -> None:
        device = Device.parse(device)
        self.names = names or NameMapper()
        self.case: Case = align_case(read_patient(patient_dir, self.names))
        self.model = load_dose_model(model, device, weights)
        self.constraints = load_constraints() if constraints is None else constraints
        # the network's view of the case, as in predict-dose (one prediction path: models.dose.predict)
        self.grid = prepare_case(self.case, self.model.oars)
        self.work = self.grid.work
        self.box = self.grid.box
        self.inputs = LiveInputs(self.work, self.box, self.model.oars)
        self.trust = TrustChecks.load(self.model, device, applicability=False) if normalise else TrustChecks()
        self.normalisation: Normalisation | None = None
        self.notes: list[str] = []
        self._said = False  # whether the latest failure to normalise has been said (again after a success)
        self._edited = True  # an edit since the last prediction: the normalisation factor is not known yet
        for note in self.trust.notes:
            self._say(note)

    @property
    def structures(self) -> dict[str, Volume]:
        """The session's structures on the CT grid, by canonical name."""
        return self.case.structures

    def canonical(self, name: str) -> str:
        """A structure name through the session's name mapping."""
        return self.names.canonical(name)

    def mask_volume(self, name: str, mask: np.ndarray | Volume) -> Volume:
        """``mask`` as a boolean Volume on the CT grid (checked: shape, not empty)."""
        ct = self.case.ct
        if isinstance(mask, Volume):
            return align_structure(name, mask.with_array(mask.array.astype(bool)), ct)
        array = np.asarray(mask)
        if array.shape != ct.shape:
            raise DoseSegError(f"mask of '{name}' has shape {array.shape}, the CT grid is {ct.shape} ([i, j, k])")
        if not array.any():
            raise DoseSegError(f"mask of '{name}' is empty: a structure needs at least one voxel")
        return ct.with_array(array.astype(bool))

    def set_mask(self, name: str, mask: np.ndarray | Volume) -> str:
        """Replace or add a structure; only the network inputs it changes are re-prepared.

        Returns:
            The structure's canonical name.
        """
        name = self.canonical(name)
        volume = self.mask_volume(name, mask)
        structures = {**self.case.structures, name: volume}
        fine = {n: m for n, m in self.case.fine_structures.items() if n != name}
        self.case = replace(self.case, structures=structures, fine_structures=fine)
        work = self.grid.mask_on_grid(volume)
        self.work = replace(self.work, structures={**self.work.structures, name: work})
        self.inputs.set_structure(name, work.array)
        self._edited = True
        return name

    def _say(self, message: str) -> None:
        self.notes.append(message)
        log.warning("%s", message)

    def predict_dose(self) -> Volume:
        """The predicted dose (Gy) on the CT grid for the current structures, as ``predict-dose`` writes it:
        normalised to the prescription (``normalisation`` says how) unless the session was opened with
        ``normalise=False`` or it cannot be (said once)."""
        inputs = self.inputs.channels[(slice(None), *self.box)]
        dose = self.grid.to_ct_grid(self.grid.in_box(predict_box_dose(self.model, inputs)))
        dose, self.normalisation, why = self.trust.try_normalise(self.case, dose, DvhMethod.AUTO)
        if why and not self._said:
            self._say(why)
        self._said, self._edited = bool(why), False
        return dose

    def sensitivity(self, name: str, metric: str = "Mean[Gy]", wrt: str | None = None) -> np.ndarray:
        """d metric / d mask voxel (Gy per voxel, float32 on the CT grid, [i, j, k]) of structure
        ``name``'s ``metric`` (``Mean[Gy]`` or ``mean``, ``Dx%[Gy]``, ``Dx cc[Gy]``), with respect
        to the mask of ``wrt`` (default: the structure itself); see ``models.dose.sensitivity``.

        Of the dose :meth:`predict` shows: normalised, the derivative of the normalised metric, the
        normalisation factor's own change included (none for the primary target's normalisation metric
        itself); with ``normalise=False``, or when the dose is not normalised, of the network's own dose."""
        from DoseSegLib.models.dose.sensitivity import Problem, differentiable_metric, mask_sensitivity

        structure, other = self.canonical(name), self.canonical(wrt or name)
        for each in (structure, other):
            if each not in self.case.structures:
                raise DoseSegError(f"no structure '{each}' in the session (have {', '.join(self.case.structures)})")
        differentiable_metric(metric)
        if self._edited and self.trust.convention is not None:
            self.predict_dose()  # the factor of the dose the current structures give
        masks = {n: m.array for n, m in self.work.structures.items()}
        done, convention = self.normalisation, self.trust.convention
        normalised = (done.structure, convention.metric, done.after_gy) if done and convention else None
        problem = Problem(structure, metric, other, masks, self.work.ct.voxel_volume_cc, normalised)
        grad = mask_sensitivity(self.model, self.inputs, self.box, problem)
        per_voxel = self.case.ct.voxel_volume_cc / self.work.ct.voxel_volume_cc  # Gy per CT voxel
        return (self.grid.to_ct_grid(grad, clip=False).array * per_voxel).astype(np.float32)

    def predict(self) -> WhatIfResult:
        """Predicted dose, DVHs, DVH metrics and clinical goals of the current structures."""
        start = time.perf_counter()
        dose = self.predict_dose()
        evaluation = evaluate_plan(replace(self.case, dose=dose), constraints=self.constraints)
        return WhatIfResult(dose, [_floats(r) for r in evaluation.metrics], evaluation.dvhs,
                            evaluation.constraints, time.perf_counter() - start, self.normalisation)
