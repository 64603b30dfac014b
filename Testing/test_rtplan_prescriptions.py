"""RTPLAN prescriptions: descriptions named like ROIs, several references per ROI, organs at risk, unusable
plans when --prescription gives every dose, and --prescription on an organ at risk."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import RT_PLAN, write_dicom_patient
from pydicom.dataset import Dataset

from DoseSegLib.analysis.dosecheck import check_predicted_dose
from DoseSegLib.core.alignment import align_case
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.io.dicom.detect import scan_folder
from DoseSegLib.io.dicom.export import decimal, new_object, save
from DoseSegLib.io.dicom.reader import ct_geometry
from DoseSegLib.io.patient import read_patient
from DoseSegLib.io.phantom import make_phantom
from DoseSegLib.models.dose.inputs import dose_input_channels
from DoseSegLib.models.dose.predict import prepare_case
from DoseSegLib.run.results import RunOptions

NAMES = {"PTV70": "PTV_70", "PTV56": "PTV_Low"}  # ROI names as a clinic writes them


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DICOM study without RTPLAN: ROIs Brainstem..Mandible, PTV_70 (canonical PTV70), PTV_Low, External."""
    case = make_phantom(shape=(40, 40, 24), spacing=(6.2, 6.2, 5.0))
    structures = {NAMES.get(n, n): m for n, m in case.structures.items()}
    return write_dicom_patient(tmp_path_factory.mktemp("rtplan") / "study", replace(case, structures=structures),
                               plan=False)


def _plan(folder: Path, references: list[dict], file: str = "rtplan.dcm") -> None:
    """An RTPLAN with these dose references: ``roi`` (ROI name), ``desc``, ``dose``, ``kind``, ``type``."""
    ct = ct_geometry(scan_folder(folder))
    rois = pydicom.dcmread(folder / "rtstruct.dcm", stop_before_pixels=True)
    numbers = {str(r.ROIName): int(r.ROINumber) for r in rois.StructureSetROISequence}
    ds = new_object(RT_PLAN, "RTPLAN", ct, "test plan")
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = ct.frame_of_reference, ""
    ds.RTPlanLabel, ds.RTPlanGeometry, ds.RTPlanDate, ds.RTPlanTime = "TEST", "PATIENT", "", ""
    items = []
    for number, reference in enumerate(references, start=1):
        item = Dataset()
        item.DoseReferenceNumber = number
        item.DoseReferenceStructureType = reference.get("kind", "VOLUME")
        item.DoseReferenceType = reference.get("type", "TARGET")
        if "roi" in reference:
            item.ReferencedROINumber = numbers[reference["roi"]]
        if "desc" in reference:
            item.DoseReferenceDescription = reference["desc"]
        item.TargetPrescriptionDose = decimal(reference["dose"])
        items.append(item)
    ds.DoseReferenceSequence = items
    save(ds, folder / file)


def _copy(study: Path, tmp_path: Path, *plans: list[dict]) -> Path:
    folder = Path(shutil.copytree(study, tmp_path / "patient"))
    for index, references in enumerate(plans):
        _plan(folder, references, f"rtplan{index}.dcm")
    return folder


def _read(folder: Path, **given: float) -> Case:
    return read_patient(folder, NameMapper(prescriptions=given))


def test_descriptions_are_named_like_rois(study: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The plan's 66 Gy for 'PTV_70' (ROI PTV_70, canonical PTV70) is used, not 70 Gy from the name."""
    folder = _copy(study, tmp_path, [{"desc": "PTV_70", "dose": 66}, {"desc": "PTV LOW", "dose": 54},
                                     {"desc": "PTV_Boost", "dose": 74}])
    with caplog.at_level(logging.WARNING, logger="DoseSegLib"):
        case = _read(folder)
    assert case.targets == {"PTV70": 66.0, "PTV_Low": 54.0} and case.unknown_targets == []
    unmatched = [r.getMessage() for r in caplog.records if "matches no structure" in r.getMessage()]
    assert len(unmatched) == 1 and "dose reference 3 'PTV_Boost' (74 Gy" in unmatched[0]
    assert "PTV70" in unmatched[0] and "PTV_Low" in unmatched[0]  # the structures it could have meant
    assert case.unmatched_prescriptions == {"PTV_Boost": 74.0}


def test_a_volume_reference_is_preferred_and_disagreeing_ones_are_named(study: Path, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    folder = _copy(study, tmp_path, [{"roi": "PTV_70", "dose": 70}, {"roi": "PTV_70", "dose": 74, "kind": "POINT"},
                                     {"roi": "PTV_Low", "dose": 56}, {"roi": "PTV_Low", "dose": 58, "kind": "VOLUME"}])
    with caplog.at_level(logging.WARNING, logger="DoseSegLib"):
        case = _read(folder)
    assert case.prescriptions == {"PTV70": 70.0, "PTV_Low": 58.0}
    warnings = [r.getMessage() for r in caplog.records if "disagree" in r.getMessage()]
    assert len(warnings) == 1 and "PTV_Low" in warnings[0] and "56 Gy" in warnings[0]
    assert warnings[0].endswith("58 Gy used")


def test_a_target_reference_on_an_organ_at_risk_is_ignored(study: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    folder = _copy(study, tmp_path, [{"roi": "PTV_70", "dose": 70}, {"roi": "PTV_Low", "dose": 56},
                                     {"roi": "SpinalCord", "dose": 45}, {"desc": "Brain Stem", "dose": 54}])
    with caplog.at_level(logging.WARNING, logger="DoseSegLib"):
        case = _read(folder)
    assert case.targets == {"PTV70": 70.0, "PTV_Low": 56.0} and "SpinalCord" not in case.target_names
    ignored = [r.getMessage() for r in caplog.records if "an organ at risk: ignored" in r.getMessage()]
    assert len(ignored) == 2 and any("SpinalCord" in m for m in ignored) and any("Brainstem" in m for m in ignored)


@pytest.mark.parametrize("plans", [[[{"roi": "PTV_70", "dose": 7000}, {"roi": "PTV_Low", "dose": 5600}]],
                                   [[{"roi": "PTV_70", "dose": 70}], [{"roi": "PTV_70", "dose": 66}]]],
                         ids=["cGy", "two plans"])
def test_an_unusable_rtplan_gives_way_to_prescriptions_for_every_target(
        study: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, plans: list) -> None:
    folder = _copy(study, tmp_path, *plans)
    with pytest.raises(DoseSegError, match="give every target's dose with --prescription NAME=GY: the study then runs"):
        _read(folder)
    with pytest.raises(DoseSegError, match="give every target's dose"):  # one target given is not enough
        _read(folder, PTV_70=70)
    with caplog.at_level(logging.WARNING, logger="DoseSegLib"):
        case = _read(folder, PTV_70=70, PTV_Low=56)
    assert case.targets == {"PTV70": 70.0, "PTV_Low": 56.0}
    assert any("rtplan" in r.getMessage() and r.getMessage().endswith("ignored: the prescriptions come from "
                                                                     "--prescription") for r in caplog.records)


@pytest.mark.parametrize(("given", "shown"), [("SpinalCord", "SpinalCord"), ("cord", "cord (SpinalCord)"),
                                              ("Parotid_L", "Parotid_L (LeftParotid)")])
def test_a_prescription_on_an_organ_at_risk_is_refused(given: str, shown: str) -> None:
    expected = f"{shown} is an organ at risk, not a target: --prescription gives target doses"
    with pytest.raises(DoseSegError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        NameMapper(prescriptions={given: 45})
    with pytest.raises(DoseSegError, match="is an organ at risk, not a target"):
        RunOptions(prescriptions={given: 45}).mapper()
    assert NameMapper(prescriptions={"CTV_High": 70}).prescriptions == {"CTV_High": 70.0}


def test_an_unknown_target_dose_is_explained_with_the_unmatched_rtplan_references() -> None:
    phantom = make_phantom(shape=(40, 40, 24), spacing=(6.2, 6.2, 5.0))
    structures = {{"PTV70": "PTV_High"}.get(n, n): m for n, m in phantom.structures.items()}
    case = align_case(replace(phantom, structures=structures, prescriptions={"PTV56": 56, "PTV_Hihg": 70}))
    with pytest.raises(DoseSegError) as info:
        dose_input_channels(case)
    message = str(info.value)
    assert "the dose of target PTV_High is unknown: no RTPLAN prescribes it and its name gives none" in message
    assert "dose references PTV_Hihg (70 Gy) match no structure" in message
    assert message.endswith("give it with --prescription, e.g. --prescription PTV_High=70")
    assert "below 10" not in message


def test_an_implausible_given_prescription_is_named_as_the_likely_cause() -> None:
    phantom = make_phantom(shape=(40, 40, 24), spacing=(6.2, 6.2, 5.0))
    case = align_case(replace(phantom, prescriptions={"PTV70": 5, "PTV56": 4}))
    dose = case.ct.with_array((case.possible_dose_mask.array * np.float32(15.9)).astype(np.float32))
    with pytest.raises(DoseSegError, match=r"\(PTV70: 5 Gy\); likely cause: 5 Gy is far below what the model "
                                           r"predicts for this target \(check the value\)") as info:
        check_predicted_dose(dose, case)
    assert "--prescription PTV70=GY" not in str(info.value)


def test_a_case_giving_an_organ_of_the_dose_model_a_target_dose_is_refused_before_prediction() -> None:
    """The Python API's Case bypasses NameMapper: the dose model's own organs are checked again."""
    case = align_case(replace(make_phantom(shape=(40, 40, 24), spacing=(6.2, 6.2, 5.0)), prescriptions={"Larynx": 50}))
    with pytest.raises(DoseSegError, match="Larynx is an organ at risk of the dose model, not a target"):
        prepare_case(case)
    prepare_case(replace(case, prescriptions={}))
