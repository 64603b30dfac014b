"""What makes a prediction trustworthy for the case at hand: is the case in the model's domain, the dose
normalised to the plan's prescription, and every warning kept for the outputs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from DoseSegLib.analysis.applicability import Applicability, Reference
from DoseSegLib.analysis.dosecheck import check_predicted_dose
from DoseSegLib.analysis.normalisation import Convention, Normalisation, normalisation_text, normalise_dose
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.options import Device, DvhMethod
from DoseSegLib.core.volume import Volume

if TYPE_CHECKING:
    from DoseSegLib.models.dose.predict import DoseModel
    from DoseSegLib.models.features.predict import FeatureModel

log = logging.getLogger(__name__)

NOT_NORMALISED = "not normalised: --no-normalise, the network's own dose"


class _Collector(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


@contextlib.contextmanager
def collect_warnings(messages: list[str]) -> Iterator[list[str]]:
    """Append every warning DoseSegLib logs inside the block to ``messages`` (they still reach the console)."""
    handler = _Collector(messages)
    logger = logging.getLogger("DoseSegLib")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


@dataclass
class TrustChecks:
    """A dose model's applicability reference and prescription convention, loaded once.

    Attributes:
        reference: the applicability calibration (None when the model has none: ``notes`` says why).
        features: the feature autoencoder the reference was made with.
        convention: how the training plans are normalised (None when unknown).
        notes: why a check is unavailable.
    """

    reference: Reference | None = None
    features: FeatureModel | None = None
    convention: Convention | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, model: DoseModel, device: Device | str, applicability: bool = True) -> TrustChecks:
        """The checks of ``model``: with ``applicability`` False only its prescription convention (the what-if
        session), without loading the feature model."""
        checks = cls()
        if applicability:
            try:
                from DoseSegLib.models.features.applicability import load_reference
                from DoseSegLib.models.features.predict import load_features_model

                checks.reference, features_name = load_reference(model)
                checks.features = load_features_model(features_name, device)
            except DoseSegError as exc:
                checks.reference = None
                checks.notes.append(f"applicability not checked: {exc}")
        if model.entry is None:
            checks.notes.append("no prescription convention for a weights file: the dose is not normalised")
            return checks
        try:
            path = model.entry.file.parent / f"{model.entry.name}.prescription.json"  # beside its weights
            checks.convention = Convention.load(path, model.entry.sha256)
        except DoseSegError as exc:
            checks.notes.append(f"the dose is not normalised: {exc}")
        return checks

    def applicability(self, case: Case, dose: Volume, auto: Sequence[str] = ()) -> Applicability | None:
        """The verdict on an aligned case with its predicted dose (None without a calibration)."""
        if self.reference is None or self.features is None:
            return None
        from DoseSegLib.models.features.applicability import assess_case

        try:
            return assess_case(self.reference, self.features, case, dose, auto)
        except DoseSegError as exc:
            log.warning("applicability not judged: %s", exc)
            return None

    def checked(self, case: Case, dose: Volume, normalise: bool, dvh_method: DvhMethod | str,
                auto: Sequence[str] = ()) -> tuple[Volume, Applicability | None, Normalisation | None, str]:
        """The network's ``dose`` judged, normalised with ``normalise``, and checked: ``run`` and ``predict-dose``
        alike (one code path, so that they refuse the same cases).

        Applicability is judged on the network's own dose. The plausibility check
        (:func:`check_predicted_dose`) sees the dose that is written: the normalised one, else the
        network's own. A prediction made for another prescription (PTV70 read from a name, the plan's
        prescription 20 Gy) cannot be normalised (the factor lies outside
        :data:`~DoseSegLib.analysis.normalisation.PLAUSIBLE_FACTOR`, a warning says so) and is then
        refused; one within that range is normalised and recorded (factor, before and after).
        ``auto``: the auto-contoured structures (see :meth:`applicability`).

        Returns:
            The dose (normalised or as predicted), the applicability verdict, what normalisation did, and why
            the dose is not normalised (:data:`NOT_NORMALISED` without ``normalise``, the reason it was left as
            predicted; "" when it is normalised, or the model has no convention: ``notes`` says so).
        """
        verdict = self.applicability(case, dose, auto)
        normalisation, why = None, NOT_NORMALISED
        if normalise:
            dose, normalisation, why = self.try_normalise(case, dose, dvh_method)
            if why:
                log.warning("%s", why)
        check_predicted_dose(dose, case)
        return dose, verdict, normalisation, why

    def try_normalise(self, case: Case, dose: Volume,
                      dvh_method: DvhMethod | str) -> tuple[Volume, Normalisation | None, str]:
        """As :meth:`normalise`, with why the dose is not normalised instead of a warning ("" when it is, or
        when the model has no convention: ``notes`` says so)."""
        if self.convention is None:
            return dose, None, ""
        if not case.targets:
            return dose, None, ("the dose is not normalised: no target with a known prescription (give one with "
                                "--prescription NAME=GY)")
        try:
            return (*normalise_dose(dose, case, self.convention, dvh_method), "")
        except DoseSegError as exc:
            return dose, None, str(exc)


def applicability_text(verdict: dict | None) -> str:
    """One line for a person: in or outside the model's domain, and why."""
    if not verdict:
        return "applicability: not checked"
    if verdict["in_distribution"]:
        return f"applicability: inside the model's domain (score {verdict['score']:.1f} <= {verdict['threshold']:.1f})"
    return (f"WARNING: OUTSIDE THE MODEL'S DOMAIN (score {verdict['score']:.1f}, "
            f"threshold {verdict['threshold']:.1f}): "
            + "; ".join(verdict["reasons"][:4]) + ("; ..." if len(verdict["reasons"]) > 4 else ""))


def trust_notes(checks: TrustChecks, verdict: Applicability | None, normalisation: Normalisation | None,
                not_normalised: str = "") -> list[str]:
    """What a prediction's notes say about its applicability and normalisation (``predict-dose``'s notes.txt);
    ``not_normalised``: why it is not normalised (see :meth:`TrustChecks.checked`)."""
    notes = [applicability_text(verdict.to_dict() if verdict is not None else None)]
    if normalisation is not None:
        notes.append(normalisation_text(normalisation.to_dict()))
    notes += [not_normalised] if not_normalised else []
    return notes + [note for note in checks.notes if verdict is None or "applicability" not in note]
