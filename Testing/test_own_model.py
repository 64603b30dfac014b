"""A clinic's own model from its DICOM-RT archive: build-cohort, training, publish-model, models, --model NAME.

The archive is synthetic (phantom patients written as DICOM-RT with vendor ROI names), nested
and mixed: one study per folder tree, two patients' files in one folder, one patient without
RTPLAN whose targets carry their dose in cGy, one whose target doses are unknown, one with a
missing CT slice. Every identifier written into the archive is then looked for, byte by byte,
in every file the cohort and the published model consist of.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from DoseSegLib.cli.main import main
from DoseSegLib.core.case import Case
from DoseSegLib.io.phantom import make_phantom
from dicom_helpers import write_dicom_patient
from model_helpers import CLINIC_MODEL as MODEL
from model_helpers import CLINIC_SHAPE as SHAPE
from model_helpers import CLINIC_SPACING as SPACING
from model_helpers import tiny_dose_config

VENDOR = {"Brainstem": "BRSTEM", "LeftParotid": "Parotid_L", "RightParotid": "Parotid_R", "SpinalCord": "Cord",
          "Esophagus": "Esoph", "Larynx": "Larynx", "Mandible": "Mand"}


def _vendor_case(seed: int, targets: dict[str, str], plan: bool, surname: str) -> Case:
    """A phantom with vendor organ names, its targets renamed (PTV70 -> ``targets['PTV70']``) and a marker
    ROI named after the patient; with ``plan`` the RTPLAN prescriptions are recorded."""
    case = make_phantom(SHAPE, SPACING, seed=seed)
    structures = {VENDOR.get(n, targets.get(n, n)): m for n, m in case.structures.items()}
    marker = case.structures["Mandible"]
    structures[f"{surname}_marker"] = marker
    prescriptions = {targets["PTV70"]: 70.0, targets["PTV56"]: 56.0} if plan else {}
    return replace(case, structures=structures, prescriptions=prescriptions)


PATIENTS = [  # id, name, targets, RTPLAN, folder (relative to the archive)
    ("MRN100201", "Doe^Jane", {"PTV70": "PTV_High", "PTV56": "PTV_Low"}, True, "2024/Doe_Jane/plan1"),
    ("MRN100202", "Roe^Richard", {"PTV70": "PTV_High", "PTV56": "PTV_Low"}, True, "mixed"),
    ("MRN100203", "Poe^Edgar", {"PTV70": "PTV_7000", "PTV56": "PTV_5600"}, False, "mixed"),
    ("MRN100204", "Moe^Max", {"PTV70": "PTV_High", "PTV56": "PTV_Low"}, False, "2025/Moe"),
    ("MRN100205", "Broken^Bob", {"PTV70": "PTV_High", "PTV56": "PTV_Low"}, True, "2025/Broken"),
    ("MRN100206", "Koe^Kim", {"PTV70": "PTV_High", "PTV56": "PTV_Low"}, True, "2023/deep/er/Koe"),
]


def write_archive(root: Path) -> Path:
    """The synthetic archive; returns ``root``."""
    for seed, (patient_id, name, targets, plan, where) in enumerate(PATIENTS):
        case = _vendor_case(seed, targets, plan, name.split("^")[0])
        scratch = root.parent / f"scratch-{seed}"
        write_dicom_patient(scratch, case, plan=plan, patient_id=patient_id, patient_name=name)
        if name.startswith("Broken"):
            (scratch / "CT0016.dcm").unlink()  # a missing slice in the middle of the series
        for file in scratch.iterdir():
            sub = "CT" if file.name.startswith("CT") else "RT"
            target = root / where / (sub if where != "mixed" else "") / f"{seed}_{file.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            file.rename(target)
        shutil.rmtree(scratch)
    (root / "README.txt").write_text("export of the planning system\n")
    return root


def identifiers(root: Path) -> set[bytes]:
    """Every patient ID, name part, date and UID written into the archive."""
    found: set[bytes] = set()
    for path in root.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for element in ds.iterall():
            if element.VR in ("UI", "DA", "PN", "LO", "SH") and element.keyword in (
                    "PatientID", "PatientName", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID", "FrameOfReferenceUID", "ReferencedSOPInstanceUID"):
                value = str(element.value)
                found.add(value.encode())
                found.update(part.encode() for part in value.split("^") if len(part) >= 3)
    return found


def leaks(folder: Path, secrets: set[bytes]) -> list[str]:
    return [f"{path.relative_to(folder)}: {secret.decode()}" for path in folder.rglob("*") if path.is_file()
            for secret in secrets if secret in path.read_bytes()]


def _rows(cohort: Path) -> dict[str, dict]:
    with (cohort / "cohort.csv").open(newline="") as handle:
        return {row["patient"]: row for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("clinic") / "archive")


@pytest.fixture(scope="module")
def cohort(archive: Path) -> Path:
    out = archive.parent / "cohort"
    key = archive.parent / "key.csv"
    assert main(["build-cohort", str(archive), "-o", str(out), "--seed", "3", "--key", str(key)]) == 0
    return out


def test_build_cohort_reads_every_study_and_says_why_it_excluded_one(cohort: Path) -> None:
    rows = _rows(cohort)
    assert len(rows) == len(PATIENTS)
    usable = [r for r in rows.values() if r["usable"] == "yes"]
    excluded = {r["reason"] for r in rows.values() if r["usable"] == "no"}
    assert len(usable) == 4
    assert any("uneven slice spacing" in reason and "slice(s) missing" in reason for reason in excluded)
    assert any("dose of target PTV_High" in reason and "--prescription" in reason for reason in excluded)
    assert {r["split"] for r in usable} == {"train", "validation"}
    assert sum(r["split"] == "validation" for r in usable) == 1
    for row in usable:
        assert (cohort / row["split"] / row["patient"] / "ct.nrrd").is_file()
        assert row["site"] == "head and neck"
        assert set(row["structures"].split(";")) == set(VENDOR)  # mapped to canonical names, marker left out
        assert row["unmapped_names"] == "1"
    targets = sorted(r["targets"] for r in usable)
    assert targets.count("PTV70=70 Gy (RTPLAN); PTV56=56 Gy (RTPLAN)") == 3
    assert "PTV70=70 Gy (name); PTV56=56 Gy (name)" in targets  # no RTPLAN: the cGy names
    assert sorted(p.name for p in (cohort / "train").iterdir()) + sorted(
        p.name for p in (cohort / "validation").iterdir()) != []


def test_cohort_site_config_and_names_table(cohort: Path) -> None:
    site = json.loads((cohort / "site.json").read_text())
    assert site["oars"] == ["Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx",
                            "Mandible"]
    assert site["target_levels"] == [70.0, 56.0]
    assert site["cohort"]["usable"] == 4 and site["cohort"]["excluded"] == 2
    with (cohort / "names.csv").open(newline="") as handle:
        names = {row["name_as_written"]: row for row in csv.DictReader(handle)}
    assert names["BRSTEM"]["mapped_to"] == "Brainstem"
    assert names["Parotid_L"]["mapped_to"] == "LeftParotid"
    assert names["<ID>_marker"]["mapped_to"] == "(not mapped)"  # a ROI named after its patient: scrubbed


def test_no_identifier_in_any_cohort_file(archive: Path, cohort: Path) -> None:
    secrets = identifiers(archive) | {b"Doe_Jane", b"20260101"}
    assert len(secrets) > 100  # the check itself found the archive's identifiers
    assert leaks(cohort, secrets) == []


def test_cohort_patient_equals_the_dicom_read(archive: Path, cohort: Path) -> None:
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.io.patient import read_patient

    written = [align_case(read_patient(cohort / r["split"] / r["patient"])) for r in _rows(cohort).values()
               if r["usable"] == "yes"]
    for folder in (archive / "2024/Doe_Jane/plan1", archive / "2023/deep/er/Koe"):
        read = align_case(read_patient(folder))
        match = [c for c in written if np.array_equal(c.ct.array, read.ct.array)]
        assert len(match) == 1, folder
        assert match[0].ct.spacing == read.ct.spacing and match[0].ct.origin == read.ct.origin
        assert np.array_equal(match[0].structures["Brainstem"].array, read.structures["Brainstem"].array)
        assert np.array_equal(match[0].structures["PTV70"].array, read.structures["PTV_High"].array)
        assert np.abs(match[0].dose.array - read.dose.array).max() < 1e-4


def test_the_key_file_lies_outside_the_cohort_and_finds_every_study(archive: Path, cohort: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    with (archive.parent / "key.csv").open(newline="") as handle:
        key = {row["patient"]: row for row in csv.DictReader(handle)}
    assert set(key) == set(_rows(cohort)) and {row["patient_id"] for row in key.values()} == {p[0] for p in PATIENTS}
    broken = next(row for row in key.values() if row["patient_id"] == "MRN100205")
    assert _rows(cohort)[broken["patient"]]["usable"] == "no" and broken["folders"].endswith("2025/Broken/RT")
    out = tmp_path / "cohort"
    out.mkdir()
    assert main(["build-cohort", str(archive), "-o", str(out), "--key", str(out / "key.csv")]) == 1
    assert "outside the cohort folder" in capsys.readouterr().err and not any(out.iterdir())


def test_build_cohort_refuses_an_archive_without_dicom(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing")
    assert main(["build-cohort", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 1
    assert "no DICOM file" in capsys.readouterr().err


def test_a_damaged_file_excludes_its_study_not_the_build(archive: Path, tmp_path: Path) -> None:
    """A truncated RTSTRUCT excludes its study with the reason; a deflated file (its size unknown before it is
    inflated) is skipped with a warning: the build goes on with the other studies."""
    from DoseSegLib.io.limits import DEFLATED

    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    rtstruct = next((copy / "2025" / "Moe").rglob("*rtstruct.dcm"))
    rtstruct.write_bytes(rtstruct.read_bytes()[:-200])
    (copy / "bomb.dcm").write_bytes(b"\0" * 128 + b"DICM" + DEFLATED.encode())
    out = tmp_path / "cohort"
    assert main(["build-cohort", str(copy), "-o", str(out), "--seed", "3"]) == 0
    reasons = [row["reason"] for row in _rows(out).values() if row["usable"] == "no"]
    assert len(reasons) == 2 and any("truncated or damaged DICOM file" in r for r in reasons), reasons
    assert leaks(out, identifiers(archive)) == []


@pytest.mark.parametrize("option", [["--validation", "-1"], ["--validation-fraction", "5"],
                                    ["--validation-fraction", "0"], ["--min-presence", "1.5"]])
def test_build_cohort_refuses_a_split_or_presence_out_of_range(archive: Path, tmp_path: Path, option: list[str],
                                                                capsys: pytest.CaptureFixture) -> None:
    """A negative count or a fraction above 1 would put all but one patient in validation, or no organ in the site."""
    assert main(["build-cohort", str(archive), "-o", str(tmp_path / "out"), *option]) == 1
    err = capsys.readouterr().err
    assert option[0] in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_train_publish_list_and_predict_with_the_clinic_model(archive: Path, cohort: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    import torch

    from DoseSegLib.models.common.catalogue import list_models
    from DoseSegLib.models.dose.training import TrainConfig, train_dose

    torch.set_num_threads(2)
    run = tmp_path / "run"
    config = TrainConfig(epochs=1, val_every=1, batch_size=1, patch=(32, 32, 32), net=tiny_dose_config())
    train_dose(cohort, run, config, device=torch.device("cpu"))
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["site"]["oars"][0] == "Brainstem" and recorded["net"]["in_channels"] == 3 + 7 + 1
    models = tmp_path / "models"
    monkeypatch.setenv("DOSESEG_MODELS_DIR", str(models))
    assert main(["publish-model", str(run), "--name", MODEL]) == 0
    assert main(["publish-model", str(run), "--name", MODEL]) == 1  # not replaced without --force
    assert main(["publish-model", str(run), "--name", "openkbp-dose-unet24", "--models-dir", str(tmp_path / "x")]) == 1
    card = (models / f"{MODEL}.md").read_text()
    assert "4 usable, 2 excluded" in card and "val_dose_score" in card and "Brainstem" in card
    assert "uncertainty intervals (--uncertainty): not calibrated (1 validation patients, at least 10 needed)" in card
    assert "applicability check: not calibrated (1 validation patients, at least 20 needed for 5% false" in card
    assert not list(models.glob("*.uncertainty.json")) and not list(models.glob("*.applicability.json"))
    assert leaks(models, identifiers(archive)) == []
    capsys.readouterr()
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert f"{MODEL}  [dose, user]" in listing and "openkbp-dose-unet24" in listing
    mine = next(m for m in list_models() if m["name"] == MODEL)
    assert mine["site"] == "head and neck" and mine["structures"][:2] == ["Brainstem", "SpinalCord"]
    assert "val_dose_score" in mine["scores"] and Path(mine["card"]).is_file()
    patient = archive / "2024" / "Doe_Jane"  # straight from the archive: vendor names, RTPLAN, nested folders
    assert main(["predict-dose", str(patient), "--model", MODEL, "-o", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert (tmp_path / "pred" / "Doe_Jane" / "dose.nrrd").is_file()
    assert main(["run", str(patient), "--model", MODEL, "-o", str(tmp_path / "run_out"), "--device", "cpu",
                 "--no-segment", "--no-radiomics"]) == 0
    assert json.loads((tmp_path / "run_out" / "summary.json").read_text())["models"]["dose"]["name"] == MODEL
    capsys.readouterr()
    assert main(["predict-dose", str(patient), "--model", MODEL, "-o", str(tmp_path / "unc"), "--device", "cpu",
                 "--uncertainty"]) == 1  # uncalibrated: the remedy is publish-model, not the bundled model's script
    err = capsys.readouterr().err
    assert "doseseg publish-model" in err and "calibrate_uncertainty.py" not in err
    weights = models / f"{MODEL}.pt"
    weights.write_bytes(weights.read_bytes() + b"tampered")
    assert main(["predict-dose", str(patient), "--model", MODEL, "-o", str(tmp_path / "pred2")]) == 1
    assert "does not match the catalogue" in capsys.readouterr().err


def test_user_models_directory_default_and_shadowing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.models.common.catalogue import find_model, load_catalogue, models_dir, user_models_dir

    monkeypatch.delenv("DOSESEG_MODELS_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    if not str(user_models_dir()).startswith(str(tmp_path)):  # macOS and Windows have their own folders
        pytest.skip("per-user data folder of another platform")
    assert user_models_dir() == tmp_path / "data" / "doseseg" / "models"
    folder = user_models_dir()
    folder.mkdir(parents=True)
    rows = [{"name": "openkbp-dose-unet24", "task": "dose", "file": "x.pt", "sha256": "0", "version": "9",
             "default": True},
            {"name": "mine", "task": "dose", "file": "mine.pt", "sha256": "0", "version": "1", "default": True}]
    (folder / "catalogue.json").write_text(json.dumps({"models": rows}))
    entries = {e.name: e for e in load_catalogue()}
    assert entries["openkbp-dose-unet24"].version == "1.0"  # a user model never shadows a bundled one
    assert entries["mine"].user
    assert find_model("dose").name == "openkbp-dose-unet24"  # nor becomes the default
    with pytest.raises(DoseSegError, match="user models in"):
        find_model("dose", "nobody")
    (folder / "catalogue.json").write_text("{not json")  # a damaged user catalogue: the bundled models still load
    assert {e.name for e in load_catalogue()} == {e.name for e in load_catalogue(models_dir())}


def test_cohort_case_on_the_working_grid_when_the_ct_is_finer_than_trained() -> None:
    from DoseSegLib.models.common.grid import WORKING_SPACING, training_grid_case

    case = make_phantom((72, 80, 40), (2.0, 2.0, 2.5), seed=1)
    moved = training_grid_case(case)
    assert moved.ct.spacing == pytest.approx(WORKING_SPACING) and moved.ct.array.dtype == np.int16
    for volume in (moved.dose, moved.possible_dose_mask, *moved.structures.values()):
        assert volume.shape == moved.ct.shape and volume.origin == moved.ct.origin
    centre = np.argwhere(moved.structures["PTV70"].array).mean(axis=0).round().astype(int)
    assert moved.dose.array[tuple(centre)] == pytest.approx(70.0, abs=1.0)
    assert training_grid_case(make_phantom(SHAPE, SPACING)).ct.spacing == SPACING  # trained range: kept


def test_names_map_from_an_edited_names_table(tmp_path: Path) -> None:
    from DoseSegLib.cli.clinic import read_names_map
    from DoseSegLib.core.errors import DoseSegError

    table = tmp_path / "names.csv"
    table.write_text("name_as_written,mapped_to,studies\nBS_PRV,Brainstem,3\nRing,(not mapped),2\nCouch,,1\n")
    assert read_names_map(table) == {"BS_PRV": "Brainstem"}
    (tmp_path / "bad.csv").write_text("a,b\nx,y\n")
    with pytest.raises(DoseSegError, match="name_as_written and mapped_to"):
        read_names_map(tmp_path / "bad.csv")


@pytest.mark.slow  # ten validation patients, five predictions each: about a minute on two idle cores
def test_train_seg_takes_the_site_organs_unless_labels_are_given(cohort: Path, tmp_path: Path) -> None:
    from DoseSegLib.cli.seg import site_labels
    from DoseSegLib.core.case import OARS

    site = json.loads((cohort / "site.json").read_text())
    assert site_labels(cohort) == tuple(site["oars"])
    (tmp_path / "site.json").write_text(json.dumps({**site, "oars": ["Prostate", "Rectum", "Bladder"]}))
    assert site_labels(tmp_path) == ("Prostate", "Rectum", "Bladder")
    assert site_labels(tmp_path / "no-site") == OARS  # an OpenKBP-layout dataset: the seven OARs


def test_a_site_with_other_organs_trains_predicts_and_checks_its_own_site(tmp_path: Path) -> None:
    import torch

    from DoseSegLib.analysis.site import check_site
    from DoseSegLib.core.alignment import align_case
    from DoseSegLib.core.errors import DoseSegError
    from DoseSegLib.io.cohort.site import SiteConfig, write_site
    from DoseSegLib.io.phantom import write_phantom_patient
    from DoseSegLib.models.dose.predict import load_dose_model, predict_case_dose
    from DoseSegLib.models.dose.training import TrainConfig, train_dose

    data = tmp_path / "cohort"
    for seed, part in enumerate(("train", "train", "validation")):
        write_phantom_patient(data / part / f"P{seed:03d}", shape=SHAPE, spacing=SPACING, seed=seed)
    write_site(data, SiteConfig("larynx", ("Larynx", "Mandible"), (70.0, 56.0)))
    config = TrainConfig(epochs=1, batch_size=1, patch=(32, 32, 32), net=tiny_dose_config(), threads=2)
    train_dose(data, tmp_path / "run", config, device=torch.device("cpu"))
    model = load_dose_model(device="cpu", weights=tmp_path / "run" / "best.pt")
    assert model.oars == ("Larynx", "Mandible") and model.site == "larynx"
    assert model.net.config.in_channels == 3 + 2 + 1
    case = align_case(make_phantom(SHAPE, SPACING, seed=5))
    dose = predict_case_dose(model, case)
    assert dose.shape == case.ct.shape and float(dose.array.max()) > 0
    others = replace(case, structures={n: m for n, m in case.structures.items() if n in ("Brainstem", "PTV70")})
    with pytest.raises(DoseSegError, match="no larynx organ"):
        check_site(others, False, model.oars, model.site)
    assert check_site(case, False, model.oars, model.site) is None
