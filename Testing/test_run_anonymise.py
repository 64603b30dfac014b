"""``run --anonymise`` computes on the case as read: the dose, DVHs and goals are those of a plain run, and the
structures keep their names where the patient's folder or name only looks like part of them."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import write_dicom_patient

from DoseSegLib.cli.main import main
from DoseSegLib.io.patient import read_volume
from DoseSegLib.io.phantom import make_phantom
from DoseSegLib.run.anonymise import PatientIdentity

PSEUDONYM = "DS-0123456789ABCDEF"
SAME = ("dvh.csv", "dvh_metrics.csv", "constraints.csv", "comparison.csv", "dvh_errors.csv")


@pytest.mark.parametrize("folder", ["1", "001"])
def test_a_numeric_folder_name_is_replaced_only_as_a_whole(folder: str) -> None:
    """Folder ``1``/``001``: never inside a structure name or a number of a note, only as the whole label."""
    who = PatientIdentity(PSEUDONYM, (f"/data/{folder}",), folder, frozenset())
    for text in (f"Parotid_{folder}", f"target PTV_{folder}: {folder} % of its voxels", f"PTV{folder}"):
        assert who.text(text) == text
    assert who.text(folder) == PSEUDONYM and who.text(f"/data/{folder}/ct.nrrd") == f"{PSEUDONYM}/ct.nrrd"


def test_names_table_names_and_the_folders_structure_names_are_kept() -> None:
    """A part that is a names-table name, or a folder part that a structure has, is not scrubbed (with a
    warning); the other parts still are."""
    who = PatientIdentity(PSEUDONYM, (), "Prostate Quixote", frozenset({"Prostate", "Quixote", "Brainstem"}))
    kept, warnings = who.keeping(["Prostate", "PTV70"])
    assert kept.parts == {"Quixote"} and kept.folder == "Prostate Quixote" and len(warnings) == 2
    assert kept.text("Prostate and Brainstem of Quixote") == "Prostate and Brainstem of ANON"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from model_helpers import write_tiny_catalogue

    root = tmp_path_factory.mktemp("anon_numbers")
    key = root / "key.txt"
    key.write_text("c2VjcmV0IG9mIHRoZSB1c2VyIDEyMzQ1Njc4OTA=\n")
    return root, write_tiny_catalogue(root / "models")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return [{key: value for key, value in row.items() if key != "patient"} for row in csv.DictReader(handle)]


CASES = {  # folder, PatientName: each a part of a structure's name or a word of the outputs
    "1": "Zebulon^Quixote", "001": "Zebulon^Quixote", "Prostate 3": "Zebulon^Quixote",
    "Brainstem 2": "Zebulon^Quixote",  # a structure the dose model uses: renamed, the prediction changed
    "Yolanda": "Test^Patient"}


@pytest.mark.parametrize("folder", list(CASES))
def test_anonymised_run_computes_what_a_plain_run_does(folder: str, setup: tuple[Path, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The dose and every DVH, metric, goal and comparison of ``run --anonymise`` equal a plain run's, the
    structures keep their names (with a warning where one is part of the patient's identity), and the
    patient's name and a folder name that identifies never appear."""
    root, models = setup
    monkeypatch.setenv("DOSESEG_MODELS", str(models))
    case = make_phantom(shape=(32, 32, 24))
    s = case.structures
    extra = {"Parotid_1": s["LeftParotid"], "Parotid_001": s["RightParotid"], "Prostate": s["PTV56"],
             "PTV_1": s["PTV70"], "Test_Ring": s["Esophagus"]}
    source = write_dicom_patient(root / "in" / folder, replace(case, structures={**s, **extra}),
                                 patient_name=CASES[folder])
    common = ["--no-radiomics", "--device", "cpu", "--prescription", "PTV1=60"]
    plain, anon = root / "plain" / folder, root / "anon" / folder
    assert main(["run", str(source), "-o", str(plain), *common]) == 0
    assert main(["run", str(source), "-o", str(anon), *common, "--anonymise", "--key-file", str(root / "key.txt")]) == 0

    assert np.array_equal(read_volume(plain / "dose.nrrd").array, read_volume(anon / "dose.nrrd").array)
    for name in SAME:  # every column but the patient's name
        assert _rows(plain / name) == _rows(anon / name), name
    before, after = (json.loads((out / "summary.json").read_text()) for out in (plain, anon))
    assert after["structures"] == before["structures"] and after["targets"] == before["targets"]
    assert after["constraints"] == before["constraints"] and after["comparison"] == before["comparison"]
    assert {"Parotid_1", "Prostate", "Brainstem", "Test_Ring"} <= set(after["structures"])
    assert after["patient"].startswith("DS-") and all(note.count("ANON") == 0 for note in after["notes"])
    kept = [w for w in after["warnings"] if w.startswith("--anonymise:")]
    assert bool(kept) == (folder in ("Prostate 3", "Brainstem 2"))
    secrets = ["Zebulon", "Quixote", str(root / "in")] + ([folder] if folder in ("Prostate 3", "Brainstem 2",
                                                                                   "Yolanda") else [])
    for path in anon.rglob("*"):
        if path.is_file() and path.suffix != ".nrrd":
            for secret in secrets:
                assert secret.lower().encode() not in path.read_bytes().lower(), (path.name, secret)
