"""Structure-name mapping: TG-263 and common aliases, PTV levels, JSON mapping files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from DoseSegLib.core.case import OARS, target_prescription
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.io.patient import read_patient

TG263 = {
    "Parotid_L": "LeftParotid",
    "Parotid_R": "RightParotid",
    "Bone_Mandible": "Mandible",
    "SpinalCord": "SpinalCord",
    "Brainstem": "Brainstem",
    "Esophagus": "Esophagus",
    "Larynx": "Larynx",
    "PTV_70": "PTV70",
}


@pytest.mark.parametrize("name, canonical", TG263.items())
def test_tg263_names_map_to_canonical(name: str, canonical: str) -> None:
    assert NameMapper().canonical(name) == canonical


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("PAROTID_L", "LeftParotid"),
        ("Spinal Cord", "SpinalCord"),
        ("Brain_Stem", "Brainstem"),
        ("Glnd_Parotid_R", "RightParotid"),
        ("ptv70", "PTV70"),
        ("PTV 56Gy", "PTV56"),
        ("PTV_59.4", "PTV59.4"),
        ("PTV_59p4", "PTV59.4"),
    ],
)
def test_aliases_are_case_and_punctuation_insensitive(name: str, canonical: str) -> None:
    assert NameMapper().canonical(name) == canonical


def test_canonical_names_map_to_themselves() -> None:
    mapper = NameMapper()
    for name in (*OARS, "PTV56", "PTV63", "PTV70"):
        assert mapper.canonical(name) == name


def test_unknown_name_is_kept() -> None:
    assert NameMapper().canonical("Cochlea_L") == "Cochlea_L"


def test_target_prescription_from_canonical_name() -> None:
    assert target_prescription("PTV70") == 70.0
    assert target_prescription("PTV59.4") == 59.4
    assert target_prescription("Brainstem") is None


def test_json_mapping_adds_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    path.write_text(json.dumps({"OAR cord (custom)": "SpinalCord", "jaw": "Jaw"}))
    mapper = NameMapper.from_json(path)
    assert mapper.canonical("oar_cord_custom") == "SpinalCord"
    assert mapper.canonical("Jaw") == "Jaw"
    assert mapper.canonical("Parotid_L") == "LeftParotid"


@pytest.mark.parametrize("text", ["{not json", '["a", "b"]', '{"a": 1}'])
def test_bad_json_mapping_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "names.json"
    path.write_text(text)
    with pytest.raises(DoseSegError, match="names.json"):
        NameMapper.from_json(path)


def test_missing_json_mapping_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DoseSegError, match="absent.json"):
        NameMapper.from_json(tmp_path / "absent.json")


def _rename_structures(folder: Path, renames: dict[str, str]) -> None:
    for old, new in renames.items():
        (folder / "structures" / f"{old}.nrrd").rename(folder / "structures" / f"{new}.nrrd")


def test_patient_with_tg263_file_names_reads_canonical(phantom_dir: Path) -> None:
    _rename_structures(phantom_dir, {canonical: name for name, canonical in TG263.items()})
    case = read_patient(phantom_dir)
    assert set(TG263.values()) <= set(case.structures)


def test_patient_with_custom_names_needs_the_mapping(phantom_dir: Path, tmp_path: Path) -> None:
    _rename_structures(phantom_dir, {"SpinalCord": "MyCord"})
    assert "MyCord" in read_patient(phantom_dir).structures
    case = read_patient(phantom_dir, NameMapper({"MyCord": "SpinalCord"}))
    assert "SpinalCord" in case.structures and "MyCord" not in case.structures


def test_two_files_for_one_structure_is_an_error(phantom_dir: Path) -> None:
    shutil.copy(phantom_dir / "structures" / "LeftParotid.nrrd", phantom_dir / "structures" / "Parotid_L.nrrd")
    with pytest.raises(DoseSegError, match=r"Parotid_L\.nrrd.*LeftParotid"):
        read_patient(phantom_dir)


def test_prescriptions_added_later_are_named_through_the_users_aliases() -> None:
    """RunOptions(names=..., prescriptions=...) gives the same doses as NameMapper(aliases, prescriptions)."""
    from DoseSegLib.core.names import NameMapper

    aliases = {"Boost": "PTV_High"}
    later = NameMapper(aliases).with_prescriptions({"Boost": 70, "PTV56": 56})
    assert later.prescriptions == NameMapper(aliases, {"Boost": 70, "PTV56": 56}).prescriptions
    assert later.prescriptions == {"PTV_High": 70.0, "PTV56": 56.0}
