"""Issue #28, items 14 and 15: one-line errors that name the file and the real problem, on the CLI and the
Python API alike (``run_batch("xyz")`` ran three patients named x, y and z)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import DoseSegLib
from DoseSegLib.cli.main import main
from DoseSegLib.cli.shard import parse_shard
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import MAX_FILENAME, safe_filename, structure_filenames
from DoseSegLib.io.patient import read_volume

# --- 15. the Python API validates its public entry points ------------------------------------------------------


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> DoseSegLib.Pipeline:
    """A Pipeline without models (the checks run before any model is needed)."""
    pipe = DoseSegLib.Pipeline.__new__(DoseSegLib.Pipeline)
    pipe.options, pipe.progress, pipe.load_seconds = DoseSegLib.RunOptions(), False, 0.0
    return pipe


def _misuses(tmp_path: Path, pipeline: DoseSegLib.Pipeline) -> dict[str, Callable[[], object]]:
    from DoseSegLib.run.results import check_run_options

    vol = np.zeros((2, 2, 2))
    return {
        "run_batch str": lambda: pipeline.run_batch("xyz", tmp_path / "o"),
        "run_batch Path": lambda: pipeline.run_batch(tmp_path, tmp_path / "o"),
        "run_batch None": lambda: pipeline.run_batch(None, tmp_path / "o"),  # type: ignore[arg-type]
        "run_batch empty": lambda: pipeline.run_batch([], tmp_path / "o"),
        "run_batch int item": lambda: pipeline.run_batch([3], tmp_path / "o"),  # type: ignore[list-item]
        "run_batch out None": lambda: pipeline.run_batch(["a"], None),  # type: ignore[arg-type]
        "run None": lambda: pipeline.run(None, tmp_path / "o"),  # type: ignore[arg-type]
        "run out int": lambda: pipeline.run("pt", 5),  # type: ignore[arg-type]
        "analyse None": lambda: pipeline.analyse(None),  # type: ignore[arg-type]
        "analyse missing": lambda: pipeline.analyse(tmp_path / "absent"),
        "options dict": lambda: check_run_options({"tta": True}),
        "options dvh_method": lambda: check_run_options(DoseSegLib.RunOptions(dvh_method="exact")),
        "options level": lambda: check_run_options(DoseSegLib.RunOptions(level=90)),
        "options flag": lambda: check_run_options(DoseSegLib.RunOptions(tta="yes")),  # type: ignore[arg-type]
        "options prescriptions list": lambda: check_run_options(
            DoseSegLib.RunOptions(prescriptions=[("PTV70", 70)])),  # type: ignore[arg-type]
        "options prescriptions cGy": lambda: check_run_options(DoseSegLib.RunOptions(prescriptions={"PTV70": 7000})),
        "options names": lambda: check_run_options(DoseSegLib.RunOptions(names={"a": "b"})),  # type: ignore[arg-type]
        "pipeline device": lambda: DoseSegLib.Pipeline(device="gpu"),
        "pipeline options": lambda: DoseSegLib.Pipeline(options="fast"),  # type: ignore[arg-type]
        "read_patient None": lambda: DoseSegLib.read_patient(None),  # type: ignore[arg-type]
        "read_patient int": lambda: DoseSegLib.read_patient(42),  # type: ignore[arg-type]
        "read_patient mapper": lambda: DoseSegLib.read_patient(tmp_path, mapper={"a": "b"}),  # type: ignore[arg-type]
        "mapper list": lambda: DoseSegLib.NameMapper(["Brainstem"]),  # type: ignore[arg-type]
        "mapper values": lambda: DoseSegLib.NameMapper({"stem": 3}),  # type: ignore[dict-item]
        "mapper prescription": lambda: DoseSegLib.NameMapper(prescriptions={"PTV": "high"}),
        "volume 2D": lambda: DoseSegLib.Volume(np.zeros((2, 2)), (1, 1, 1), (0, 0, 0)),
        "volume list": lambda: DoseSegLib.Volume([[[0]]], (1, 1, 1), (0, 0, 0)),  # type: ignore[arg-type]
        "volume spacing": lambda: DoseSegLib.Volume(vol, (1, 0, 1), (0, 0, 0)),
        "volume spacing None": lambda: DoseSegLib.Volume(vol, None, (0, 0, 0)),  # type: ignore[arg-type]
        "volume origin nan": lambda: DoseSegLib.Volume(vol, (1, 1, 1), (0, float("nan"), 0)),
        "volume direction": lambda: DoseSegLib.Volume(vol, (1, 1, 1), (0, 0, 0), np.zeros((3, 3))),
        "case prescription": lambda: DoseSegLib.Case("p", DoseSegLib.Volume(vol, (1, 1, 1), (0, 0, 0)),
                                                     prescriptions={"PTV70": -70}),
    }


CASES = [
    "run_batch str", "run_batch Path", "run_batch None", "run_batch empty", "run_batch int item", "run_batch out None",
    "run None", "run out int", "analyse None", "analyse missing", "options dict", "options dvh_method",
    "options level", "options flag", "options prescriptions list", "options prescriptions cGy", "options names",
    "pipeline device", "pipeline options", "read_patient None", "read_patient int", "read_patient mapper",
    "mapper list", "mapper values", "mapper prescription", "volume 2D", "volume list", "volume spacing",
    "volume spacing None", "volume origin nan", "volume direction", "case prescription",
]


@pytest.mark.parametrize("case", CASES)
def test_api_misuse_raises_one_line_doseseg_error(case: str, tmp_path: Path, pipeline: DoseSegLib.Pipeline) -> None:
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DoseSegError) as error:
        _misuses(tmp_path, pipeline)[case]()
    assert "\n" not in str(error.value) and str(error.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no patient named x, y or z


def test_every_case_is_listed(tmp_path: Path, pipeline: DoseSegLib.Pipeline) -> None:
    assert sorted(_misuses(tmp_path, pipeline)) == sorted(CASES)


# --- 14. messages name the file and the real problem -----------------------------------------------------------

@pytest.mark.parametrize("text", ["²/4", "1/٤", "1/4.0", "-1/4", "1/", "a/b", "1/99999999999"])
def test_shard_text_is_refused_with_the_expected_form(text: str) -> None:
    """``--shard ²/4`` said 'unexpected ValueError' ('²'.isdigit() is True)."""
    with pytest.raises(DoseSegError, match="expected K/N with whole numbers"):
        parse_shard(text, {})


@pytest.mark.parametrize("name", ["😀" * 64, "é" * 80, "PTV_" + "ü" * 60, "a" * 79 + "😀"])
def test_file_names_are_bounded_in_bytes_not_characters(name: str) -> None:
    """A 64-emoji ROI name gave 'File name too long' (the sanitiser counted characters, not bytes)."""
    stem = safe_filename(name)
    assert len(stem.encode()) <= MAX_FILENAME and stem.encode().decode() == stem


def test_a_64_emoji_roi_name_is_written(phantom_dir: Path, tmp_path: Path) -> None:
    from DoseSegLib.io.patient import read_mask, write_structures

    mask = read_mask(phantom_dir / "structures" / "Brainstem.nrrd")
    write_structures(tmp_path / "structures", {"😀" * 64: mask, "é" * 200: mask, "Brainstem": mask})
    assert len(list((tmp_path / "structures").glob("*.nrrd"))) == 3


@pytest.mark.parametrize("names", [["CON", "con"], ["NUL.txt", "nul"], ["COM1", "com1 "], ["Lens", "LENS"],
                                   ["LPT9", "lpt9.a"], ["AUX .x", "aux"]])
def test_windows_reserved_names_and_case_only_differences(names: list[str]) -> None:
    """Issue #26 item 6: CON, NUL, COM1 ... and names differing only in case never share a file."""
    files = structure_filenames(names)
    assert len({f.lower() for f in files.values()}) == len(names)
    for file in files.values():
        assert file.split(".")[0].rstrip(" ").upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT9"}


def test_a_bad_summary_json_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from DoseSegLib.io.phantom import make_phantom
    from DoseSegLib.io.patient import write_segmentation

    results = tmp_path / "results"
    results.mkdir()
    phantom = make_phantom(shape=(40, 40, 32))
    write_segmentation(results / "segmentation.seg.nrrd", {"Brainstem": phantom.structures["Brainstem"]})
    (results / "summary.json").write_text("{not json")
    (tmp_path / "ct").mkdir()
    from dicom_helpers import write_ct_series

    write_ct_series(tmp_path / "ct", phantom.ct)
    assert main(["export-dicom", str(results), "--ct", str(tmp_path / "ct"), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "summary.json: unreadable summary" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["rtdose", "rtstruct", "rtplan"])
def test_a_truncated_rt_file_is_named(tmp_path: Path, kind: str) -> None:
    from dicom_helpers import write_dicom_patient

    from DoseSegLib.io.patient import read_patient
    from DoseSegLib.io.phantom import make_phantom

    folder = write_dicom_patient(tmp_path / "pt", make_phantom(shape=(40, 40, 32)))
    path = folder / f"{kind}.dcm"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DoseSegError) as error:
        read_patient(folder)
    assert "\n" not in str(error.value) and "unexpected" not in str(error.value)
    assert str(path) in str(error.value) or "patients" not in str(error.value)


def test_an_output_folder_error_names_the_output_not_the_staging(tmp_path: Path) -> None:
    """A long -o or a read-only parent named the hidden staging folder."""
    from DoseSegLib.io.outputs import staged_output

    import errno
    import tempfile

    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".out.partial-host-1-abc"))

    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "mkdtemp", read_only)
        with pytest.raises(DoseSegError) as error, staged_output(out, False, []) as staging:
            (staging / "x").write_text("x")
    message = str(error.value)
    assert message.startswith(str(out)) and ".partial-" not in message and "Read-only file system" in message
    long_out = tmp_path / ("x" * 250)
    with staged_output(long_out, False, []) as staging:
        (staging / "r.txt").write_text("ok")
    assert (long_out / "r.txt").is_file()


def test_read_volume_names_a_missing_file_and_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DoseSegError, match="file not found"):
        read_volume(tmp_path / "absent.nrrd")
    with pytest.raises(DoseSegError, match="not a regular file"):
        read_volume(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({}))
