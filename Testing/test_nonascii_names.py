"""Non-ASCII structure names (``Mâchoire``) in every NRRD file DoseSeg writes, as 3D Slicer writes them (UTF-8)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import write_dicom_patient

from DoseSegLib.core.volume import Volume
from DoseSegLib.io.nrrd_read import read_header
from DoseSegLib.io.patient import (
    read_dose, read_named_segmentation, read_volume, write_dose, write_segmentation, write_volume,
)
from DoseSegLib.io.phantom import make_phantom, write_phantom_patient

NAMES = ("Mâchoire", "腮腺_G", "Larynx")


def _masks() -> dict[str, Volume]:
    grid = Volume(np.zeros((6, 5, 4), bool), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    masks = {}
    for i, name in enumerate(NAMES):
        array = grid.array.copy()
        array[i : i + 3, 1:4, 1:3] = True  # overlapping
        masks[name] = grid.with_array(array)
    return masks


def test_segment_names_are_written_in_utf8_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.seg.nrrd"
    write_segmentation(path, _masks(), {"Mâchoire": (1.0, 0.0, 0.0)}, crop=True)
    head = path.read_bytes().split(b"\n\n")[0]
    assert "Segment0_Name:=Mâchoire".encode() in head.split(b"\n")  # the bytes Slicer writes
    assert "Segment0_ID:=Mâchoire".encode() in head.split(b"\n")
    masks, given = read_named_segmentation(path)
    assert list(masks) == list(NAMES) and list(given.values()) == list(NAMES)
    for name, mask in _masks().items():
        assert masks[name].array.sum() == mask.array.sum()


def test_slicer_reads_the_original_segment_names(tmp_path: Path) -> None:
    """3D Slicer's own segmentation storage node (PyPI slicer-core) reads the names DoseSeg wrote."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML) is not installed")
    if not hasattr(slicer, "vtkMRMLSegmentationStorageNode"):
        pytest.skip("the PyPI package named slicer is not 3D Slicer's slicer-core")
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    path = tmp_path / "s.seg.nrrd"
    write_segmentation(path, _masks())
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    assert [s.GetName() for s in segments] == list(NAMES)
    assert [segmentation.GetNthSegmentID(i) for i in range(len(segments))] == list(NAMES)


def test_volume_key_values_are_written_in_utf8_and_read_back(tmp_path: Path) -> None:
    volume = make_phantom(shape=(12, 10, 8)).ct
    path = tmp_path / "sensitivity.nrrd"
    write_volume(path, volume, {"Structure": "Mâchoire", "WithRespectTo": "Parótida\nIzq", "Units": "Gy"})
    header = read_header(path)[0]
    assert header["Structure"] == "Mâchoire" and header["WithRespectTo"] == "Parótida Izq"
    assert header["Units"] == "Gy"
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.index_to_lps, volume.index_to_lps)
    write_dose(tmp_path / "dose.nrrd", volume.with_array(volume.array.astype(np.float32)))  # ASCII: as before
    assert read_header(tmp_path / "dose.nrrd")[0]["DoseUnits"] == "GY"
    assert read_dose(tmp_path / "dose.nrrd").array.shape == volume.shape


@pytest.mark.parametrize("kind", ["nrrd", "dicom"])
def test_run_with_a_non_ascii_structure_writes_every_output(kind: str, tiny_models: Path, tmp_path: Path) -> None:
    """A structure file structures/Mâchoire.nrrd, or an RTSTRUCT ROI "Mâchoire": the run writes everything."""
    from DoseSegLib.run.pipeline import Pipeline, RunOptions

    patient = tmp_path / "patient"
    if kind == "nrrd":
        write_phantom_patient(patient, shape=(40, 40, 32))
        shutil.move(patient / "structures" / "Mandible.nrrd", patient / "structures" / "Mâchoire.nrrd")
    else:
        case = make_phantom(shape=(40, 40, 32))
        structures = {("Mâchoire" if n == "Mandible" else n): m for n, m in case.structures.items()}
        write_dicom_patient(patient, replace(case, structures=structures))
    out = tmp_path / "out"
    Pipeline(device="cpu", options=RunOptions(radiomics=False, segment=False)).run(patient, out)
    summary = json.loads((out / "summary.json").read_text())
    assert "Mâchoire" in summary["structures"]
    masks, given = read_named_segmentation(out / "segmentation.seg.nrrd")
    assert "Mâchoire" in masks and given["Mâchoire"] == "Mâchoire"
    assert "Mâchoire" in (out / "dvh_metrics.csv").read_text(encoding="utf-8")


def test_tables_are_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """dvh_metrics.csv and the other tables hold names in any script also where the locale's encoding is not
    UTF-8 (Windows' cp1252; here a C locale without UTF-8 coercion), and read back as written."""
    import os
    import subprocess
    import sys

    script = (
        "import sys; from DoseSegLib.io.tables import read_csv, write_csv\n"
        "rows = [{'structure': 'M\\u00e2choire', 'note': '\\u816e\\u817a'}]\n"  # ASCII: argv of a C locale
        "write_csv(sys.argv[1], rows)\n"
        "assert read_csv(sys.argv[1]) == rows, read_csv(sys.argv[1])\n"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "t.csv")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "t.csv").read_bytes().decode("utf-8").splitlines()[1] == "Mâchoire,腮腺"


def test_an_edited_names_map_with_a_bom_and_accents_reads_whatever_the_locale(tmp_path: Path) -> None:
    """build-cohort's names.csv edited in a spreadsheet and saved as "CSV UTF-8" (a byte order mark before the
    header), as write_csv writes it (UTF-8, no BOM), and a JSON map: accented names read as written, also in a
    C locale without UTF-8 coercion (read_names_map took the locale's encoding and the BOM into the header)."""
    import os
    import subprocess
    import sys

    (tmp_path / "excel.csv").write_bytes("\ufeffname_as_written,mapped_to,studies\nM\u00e2choire,Mandible,3\n".encode())
    (tmp_path / "map.json").write_bytes('{"M\u00e2choire": "Mandible"}'.encode())
    script = (
        "import sys; from pathlib import Path; from DoseSegLib.cli.clinic import read_names_map\n"
        "from DoseSegLib.io.tables import write_csv\n"
        "folder = Path(sys.argv[1])\n"
        "write_csv(folder / 'ours.csv', [{'name_as_written': 'M\\u00e2choire', 'mapped_to': 'Mandible'}])\n"
        "for name in ('excel.csv', 'ours.csv', 'map.json'):\n"
        "    found = read_names_map(folder / name)\n"
        "    assert found == {'M\\u00e2choire': 'Mandible'}, (name, found)\n"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_slicers_table_reader_loads_our_tables_names_as_written(tmp_path: Path) -> None:
    """A table as write_csv writes it (UTF-8, no BOM) loads into a Slicer table node with its accented name and
    its header as written, and a spreadsheet's re-save with a BOM too (why write_csv need not write one for Slicer)."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    from DoseSegLib.io.tables import write_csv

    write_csv(tmp_path / "ours.csv", [{"structure": "Mâchoire", "mean_gy": 12.5}])
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "ours.csv").read_bytes())
    for name in ("ours.csv", "excel.csv"):
        scene, node, storage = slicer.vtkMRMLScene(), slicer.vtkMRMLTableNode(), slicer.vtkMRMLTableStorageNode()
        scene.AddNode(node)
        scene.AddNode(storage)
        storage.SetFileName(str(tmp_path / name))
        assert storage.ReadData(node), name
        table = node.GetTable()
        assert [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())] == ["structure", "mean_gy"], name
        assert node.GetCellText(0, 0) == "Mâchoire", name
