"""Structure names with control characters (newline, tab, NUL, other C0/C1 controls, line separators): every input
route keeps them in one printable form (each control character ``_``, spaces at the ends dropped) with a warning
naming the file, so that every output holds them safely; above all every NRRD header reads back, with pynrrd and
with 3D Slicer's own reader, with as many segments as were written."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

import nrrd
import numpy as np
import pytest
from dicom_helpers import write_dicom_patient

from DoseSegLib.cli.main import main
from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper, parse_prescription, printable_name, shown_name
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.dicom.export import roi_names
from DoseSegLib.io.openkbp import read_openkbp_csv
from DoseSegLib.io.patient import read_named_segmentation, read_patient, write_segmentation, write_volume
from DoseSegLib.io.phantom import make_phantom, write_phantom_patient

CONTROLS = {"newline": "\n", "tab": "\t", "carriage return": "\r", "NUL": "\x00", "escape": "\x1b",
            "form feed": "\x0c", "DEL": "\x7f", "C1 next line": "\x85", "C1 CSI": "\x9b", "line separator": "\u2028"}
IN_FILE_NAMES = ("newline", "tab", "carriage return", "escape")  # a POSIX file name holds any byte but NUL and /
ANY_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # line ends of a text file aside
LONG = "Optimisation_structure_for_the_left_parotid_sparing_ring_number_one"  # 67 characters: LO allows 64
OTHER_NAMES = ("Mâchoire", "腮腺_G", "E=F", "Lens:L", "x:=y", "=", ":", ":=", "PTV 70", "a\\b")


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def _check_warning(caplog: pytest.LogCaptureFixture, where: str, name: str) -> None:
    """One warning names the file and the name (escaped: the warning itself is printable) and says the new name."""
    found = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "control characters" in
             r.getMessage()]
    assert any(where in m and f"'{shown_name(name)}'" in m and f"read as '{printable_name(name)}'" in m
               for m in found), found
    assert not any(ANY_CONTROL.search(m) or "\n" in m for m in found), found


# --- the rule ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("what", list(CONTROLS))
def test_each_control_character_becomes_an_underscore(what: str) -> None:
    name = f"Ring{CONTROLS[what]}Opt"
    assert printable_name(name) == "Ring_Opt"
    assert NameMapper().canonical(name) == "Ring_Opt"
    assert not ANY_CONTROL.search(shown_name(name)) and "\n" not in shown_name(name) and "Ring" in shown_name(name)


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_other_names_are_kept_as_they_are(name: str) -> None:
    assert printable_name(name) == name and shown_name(name) == name


def test_spaces_and_nuls_at_the_ends_are_dropped() -> None:
    """A NRRD reader drops a value's spaces at its ends; a NUL-padded name is padding, not a name."""
    assert printable_name("  PTV70 \n") == "PTV70"
    assert printable_name("PTV70\x00\x00") == "PTV70"
    assert printable_name("\t") == ""


# --- every input route ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("what", IN_FILE_NAMES)
def test_a_structure_file_named_with_a_control_character(what: str, phantom_dir: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    name = f"Ring{CONTROLS[what]}Opt"
    file = phantom_dir / "structures" / f"{name}.nrrd"
    shutil.copy(phantom_dir / "structures" / "Larynx.nrrd", file)
    case = read_patient(phantom_dir)
    assert "Ring_Opt" in case.structures and case.original_names["Ring_Opt"] == "Ring_Opt"
    assert not [n for n in case.structures if ANY_CONTROL.search(n) or "\n" in n]
    _check_warning(caplog, shown_name(str(file)), name)


def test_two_structure_files_of_one_printable_name_are_refused(phantom_dir: Path) -> None:
    for name in ("Ring\tOpt", "Ring_Opt"):
        shutil.copy(phantom_dir / "structures" / "Larynx.nrrd", phantom_dir / "structures" / f"{name}.nrrd")
    with pytest.raises(DoseSegError, match="'Ring_Opt' and 'Ring_Opt' both map to structure 'Ring_Opt'"):
        read_patient(phantom_dir)


def _masks(names: list[str]) -> dict[str, Volume]:
    grid = Volume(np.zeros((len(names) + 2, 5, 4), bool), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    masks = {}
    for i, name in enumerate(names):
        array = grid.array.copy()
        array[i : i + 3, 1:4, 1:3] = True  # overlapping: several layers
        masks[name] = grid.with_array(array)
    return masks


def _spoil_header(path: Path, stand_ins: dict[str, str]) -> None:
    """The segment names' stand-ins replaced in the header by the names, in UTF-8 (as another tool may write)."""
    data = path.read_bytes()
    end = data.index(b"\n\n")
    head = data[:end]
    for stand_in, name in stand_ins.items():
        head = head.replace(stand_in.encode(), name.encode())
    path.write_bytes(head + data[end:])


def test_a_segmentation_file_with_control_characters_in_segment_names(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A .seg.nrrd whose segment names hold a tab, NUL, form feed or line separator (a newline would end the
    header line: no valid file holds one): read in printable form, the header's lines split at line feeds only."""
    names = {f"Seg{i}Stand": f"Seg{c}Name{i}" for i, c in enumerate(("\t", "\x00", "\x0c", "\u2028", "\x85"))}
    path = tmp_path / "s.seg.nrrd"
    write_segmentation(path, _masks(list(names)))
    _spoil_header(path, names)
    masks, given = read_named_segmentation(path)
    assert list(masks) == [printable_name(n) for n in names.values()] == list(given.values())
    for name in names.values():
        _check_warning(caplog, str(path), name)


def _edit_roi_names(rtstruct: Path, names: dict[str, str]) -> None:
    import pydicom

    ds = pydicom.dcmread(rtstruct)
    for item in ds.StructureSetROISequence:
        item.ROIName = names.get(str(item.ROIName), item.ROIName)
    ds.save_as(rtstruct)


def test_rtstruct_roi_names_with_control_characters_or_a_backslash(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """ROIName is LO: DICOM allows no control character in it, yet a file may hold one; a backslash splits it into
    two values, which are joined back (not read as "['Ring', 'B']")."""
    case = make_phantom(shape=(40, 40, 32))
    renamed = {"Larynx": "Ring\nOpt", "Mandible": "Cord\tPRV", "Esophagus": "Eso\x00PRV", "Brainstem": "Ring\\B"}
    patient = write_dicom_patient(tmp_path / "patient", case)
    _edit_roi_names(patient / "rtstruct.dcm", renamed)
    read = read_patient(patient)
    assert {"Ring_Opt", "Cord_PRV", "Eso_PRV", "Ring\\B"} <= set(read.structures)
    assert read.original_names["Ring_Opt"] == "Ring_Opt" and read.original_names["Ring\\B"] == "Ring\\B"
    for name in ("Ring\nOpt", "Cord\tPRV", "Eso\x00PRV"):
        _check_warning(caplog, str(patient / "rtstruct.dcm"), name)


def test_openkbp_csv_structure_named_with_a_tab(csv_patient: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = csv_patient / "Ring\tOpt.csv"
    shutil.copy(csv_patient / "Parotid_L.csv", file)
    case = read_openkbp_csv(csv_patient)
    assert "Ring_Opt" in case.structures and case.original_names["Ring_Opt"] == "Ring_Opt"
    _check_warning(caplog, shown_name(str(file)), "Ring\tOpt")


def test_a_names_map_giving_a_name_with_control_characters(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from DoseSegLib.cli.clinic import read_names_map

    path = tmp_path / "names.json"
    path.write_text(json.dumps({"Ring": "Ring\nOpt", "Stem": "Brain\x00stem"}))
    mapper = NameMapper.from_json(path)
    assert mapper.canonical("Ring") == "Ring_Opt" and mapper.canonical("Stem") == "Brain_stem"
    _check_warning(caplog, str(path), "Ring\nOpt")
    table = tmp_path / "names.csv"
    table.write_text('name_as_written,mapped_to\nRing,"Ring\tOpt"\n', encoding="utf-8")
    assert NameMapper(read_names_map(table), source=table).canonical("Ring") == "Ring_Opt"
    _check_warning(caplog, str(table), "Ring\tOpt")


def test_a_prescription_named_with_a_tab_finds_its_target(phantom_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """``--prescription $'PTV\\tHigh=70'`` (a name pasted from a table) is the target PTV_High."""
    (phantom_dir / "structures" / "PTV70.nrrd").rename(phantom_dir / "structures" / "PTV_High.nrrd")
    assert parse_prescription("PTV\tHigh=70")[0] == "PTV\tHigh"
    assert NameMapper(prescriptions={"PTV\tHigh": 70}).prescriptions == {"PTV_High": 70.0}
    case = read_patient(phantom_dir, NameMapper(prescriptions={"PTV\tHigh": 70}))
    assert case.targets["PTV_High"] == 70.0
    out = tmp_path / "dvh"
    assert main(["dvh", str(phantom_dir), "-o", str(out), "--prescription", "PTV\tHigh=70"]) == 0, \
        capsys.readouterr().err
    assert "PTV_High" in (out / "dvh_metrics.csv").read_text(encoding="utf-8")


def test_a_case_built_in_python_gets_printable_names(caplog: pytest.LogCaptureFixture) -> None:
    phantom = make_phantom(shape=(24, 24, 16))
    mask = phantom.structures["Larynx"]
    case = Case("p", phantom.ct, {"Ring\nOpt": mask, "Larynx": mask}, prescriptions={"PTV\t70": 70.0},
                original_names={"Larynx": "Lar\tynx"})
    assert list(case.structures) == ["Ring_Opt", "Larynx"] and case.prescriptions == {"PTV_70": 70.0}
    assert case.original_names == {"Larynx": "Lar_ynx"}
    _check_warning(caplog, "patient 'p'", "Ring\nOpt")
    assert replace(case, name="q").structures is case.structures  # already printable: unchanged, no new warning
    with pytest.raises(DoseSegError, match=r"structures 'Ring_Opt' and 'Ring\\nOpt' are both 'Ring_Opt'"):
        Case("p", phantom.ct, {"Ring_Opt": mask, "Ring\nOpt": mask})


# --- every output --------------------------------------------------------------------------------------------

def _segment_names(path: Path) -> list[str]:
    """The segment names of a .seg.nrrd as pynrrd itself reads the header (ASCII; other bytes dropped)."""
    header = nrrd.read_header(str(path))
    return [str(v) for k, v in header.items() if re.fullmatch(r"Segment[0-9]+_Name", k)]


def test_every_segment_name_reads_back_from_the_header(tmp_path: Path) -> None:
    """Control characters, non-ASCII, ``=``, ``:`` and NRRD's own ``:=`` in segment names: the header reads back
    with pynrrd with one segment per name, and DoseSeg reads each name as written (printable)."""
    names = [f"C{c}{i}" for i, c in enumerate(CONTROLS.values())] + list(OTHER_NAMES)
    path = tmp_path / "s.seg.nrrd"
    write_segmentation(path, _masks(names), crop=True)
    head = path.read_bytes().split(b"\n\n")[0].decode("utf-8")
    assert not ANY_CONTROL.search(head) and "\r" not in head
    assert len(_segment_names(path)) == len(names)
    written = [printable_name(n) for n in names]
    assert [n for n in _segment_names(path) if n in written] == [n for n in written if n.isascii()]
    masks, given = read_named_segmentation(path)
    assert list(given.values()) == [printable_name(n) for n in names]
    by_name = {written: masks[canonical] for canonical, written in given.items()}
    for name, mask in _masks(names).items():
        assert by_name[printable_name(name)].array.sum() == mask.array.sum()


def test_slicer_reads_every_segment(tmp_path: Path) -> None:
    """3D Slicer's own segmentation storage node (PyPI slicer-core) reads as many segments, names as written."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML) is not installed")
    if not hasattr(slicer, "vtkMRMLSegmentationStorageNode"):
        pytest.skip("the PyPI package named slicer is not 3D Slicer's slicer-core")
    slicer.vtkSegmentationConverterFactory.GetInstance().RegisterConverterRule(
        slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    names = [f"C{c}{i}" for i, c in enumerate(CONTROLS.values())] + list(OTHER_NAMES)
    path = tmp_path / "s.seg.nrrd"
    write_segmentation(path, _masks(names))
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    read = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert read == [printable_name(n) for n in names]


def test_volume_key_values_with_control_characters_read_back(tmp_path: Path) -> None:
    volume = make_phantom(shape=(12, 10, 8)).ct
    path = tmp_path / "v.nrrd"
    fields = {f"K{i}": f"a{c}b" for i, c in enumerate(CONTROLS.values())} | {"Eq": "x:=y=z"}
    write_volume(path, volume, fields)
    header = nrrd.read_header(str(path))
    assert all(header[key] == "a b" for key in fields if key != "Eq") and header["Eq"] == "x:=y=z"


def test_roi_names_are_written_as_dicom_allows(caplog: pytest.LogCaptureFixture) -> None:
    written = roi_names(["Ring\nOpt", "Lens\\L", "Mâchoire", "E=F:G"])
    assert list(written.values()) == ["Ring_Opt", "Lens/L", "Mâchoire", "E=F:G"]
    cut = roi_names([LONG, LONG + "_copy", LONG + "_other", "Lens/L", "Lens\\L"])
    assert list(cut.values()) == [LONG[:64], LONG[:62] + "~2", LONG[:62] + "~3", "Lens/L", "Lens/L~2"]
    assert "ROI 'Lens\\L' written as ROIName 'Lens/L'" in _warnings(caplog)
    assert "ROI 'Ring\\nOpt' written as ROIName 'Ring_Opt'" in _warnings(caplog)


def _check_outputs(out: Path, name: str) -> None:
    """Every file of a run's output folder is safe: NRRD headers read back (the segmentation with one segment per
    structure of summary.json), text files hold no control character and the printable name, never the raw one."""
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert name in summary["structures"]
    assert len(_segment_names(out / "segmentation.seg.nrrd")) == len(read_named_segmentation(
        out / "segmentation.seg.nrrd")[0])
    assert name in read_named_segmentation(out / "segmentation.seg.nrrd")[0]
    for path in sorted(out.rglob("*")):
        if path.suffix == ".nrrd":
            nrrd.read_header(str(path))
        elif path.suffix in (".csv", ".json", ".html", ".txt"):
            text = path.read_text(encoding="utf-8")
            assert not ANY_CONTROL.search(text.replace("\r\n", "\n")), path
            assert "Ring\nOpt" not in text and "Ring\tOpt" not in text, path
    assert name in (out / "dvh_metrics.csv").read_text(encoding="utf-8")
    assert name in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["nrrd", "dicom"])
def test_a_run_with_a_control_character_in_a_name_writes_every_output_safely(
        kind: str, tiny_models: Path, tmp_path: Path) -> None:
    """structures/Ring<newline>Opt.nrrd, or an RTSTRUCT ROI "Ring<newline>Opt": every output reads back; on the DICOM
    patient, export-dicom --all-structures writes the ROI as "Ring_Opt"."""
    import pydicom

    from DoseSegLib.run.pipeline import Pipeline, RunOptions

    patient = tmp_path / "patient"
    if kind == "nrrd":
        write_phantom_patient(patient, shape=(40, 40, 32))
        shutil.copy(patient / "structures" / "Larynx.nrrd", patient / "structures" / "Ring\nOpt.nrrd")
    else:
        case = make_phantom(shape=(40, 40, 32))
        write_dicom_patient(patient, replace(case, structures={**case.structures, "RingStand": case.structures[
            "Larynx"], "LongStand": case.structures["Mandible"]}))
        _edit_roi_names(patient / "rtstruct.dcm", {"RingStand": "Ring\nOpt", "LongStand": LONG})
    out = tmp_path / "out"
    Pipeline(device="cpu", options=RunOptions(radiomics=False, segment=False)).run(patient, out)
    _check_outputs(out, "Ring_Opt")
    if kind == "dicom":
        exported = tmp_path / "dicom"
        assert main(["export-dicom", str(out), "--ct", str(patient), "-o", str(exported), "--all-structures"]) == 0
        names = [str(item.ROIName) for item in pydicom.dcmread(exported / "rtstruct.dcm").StructureSetROISequence]
        assert "Ring_Opt" in names and not [n for n in names if ANY_CONTROL.search(n) or "\n" in n]
        assert LONG[:64] in names and max(len(n) for n in names) == 64  # LO: at most 64 characters
