"""The ``doseseg import-openkbp`` and ``doseseg align`` commands: results, name mapping, bad input."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nrrd
import numpy as np
import pytest
from cli_helpers import run_cli

from DoseSegLib import __version__
from DoseSegLib.cli.main import main
from DoseSegLib.core.case import Case
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.patient import read_volume, write_volume

TreeHash = Callable[[Path], dict[str, str]]


def assert_same_nrrd_folders(actual: Path, expected: Path) -> None:
    """Every NRRD under ``expected`` exists under ``actual`` with equal voxels, type and geometry."""
    expected_files = sorted(p.relative_to(expected) for p in expected.rglob("*.nrrd"))
    assert sorted(p.relative_to(actual) for p in actual.rglob("*.nrrd")) == expected_files
    for relative in expected_files:
        data, header = nrrd.read(str(actual / relative))
        reference, reference_header = nrrd.read(str(expected / relative))
        np.testing.assert_array_equal(data, reference, err_msg=str(relative), strict=True)
        for key in ("space origin", "space directions"):
            np.testing.assert_allclose(header[key], reference_header[key], atol=1e-6, err_msg=f"{relative} {key}")


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("split, patient", [("train", "pt_1"), ("validation", "pt_201")])
def test_import_openkbp_equals_the_nrrd_copy(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, split: str, patient: str
) -> None:
    source = shared_data / "openkbp-csv" / patient
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    code, out, err = run_cli(capsys, "import-openkbp", source, "-o", tmp_path / patient)
    assert (code, err) == (0, "")
    assert str(tmp_path / patient) in out
    assert_same_nrrd_folders(tmp_path / patient, shared_data / "openkbp" / split / patient)


def test_import_openkbp_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash) -> None:
    source = tmp_path / "pt_5"
    source.mkdir()
    np.savetxt(source / "voxel_dimensions.csv", [2.0, 3.0, 4.0])
    (source / "ct.csv").write_text(",data\n0,1040\n1,0\n")
    (source / "Parotid_R.csv").write_text(",data\n128,\n129,\n")
    before = tree_hash(source)
    code, _, err = run_cli(capsys, "import-openkbp", source, "-o", tmp_path / "out")
    assert (code, err) == (0, "")
    assert tree_hash(source) == before
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.nrrd")) == ["RightParotid.nrrd", "ct.nrrd"]
    ct = read_volume(tmp_path / "out" / "ct.nrrd")
    assert ct.spacing == (3.0, 2.0, 4.0) and ct.array[0, 0, 127] == 40 and ct.array[0, 0, 126] == -1000
    assert read_volume(tmp_path / "out" / "structures" / "RightParotid.nrrd").shape == (1, 1, 2)


def test_align_puts_everything_on_the_ct_grid(
    phantom_dir: Path, phantom_case: Case, tmp_path: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash
) -> None:
    before = tree_hash(phantom_dir)
    out = tmp_path / "aligned"
    code, stdout, err = run_cli(capsys, "align", phantom_dir, "-o", out)
    assert (code, err) == (0, "")
    assert f"wrote {out}" in stdout
    assert tree_hash(phantom_dir) == before
    expected = {"ct": phantom_case.ct, "dose": phantom_case.dose, "possible_dose_mask": phantom_case.possible_dose_mask}
    expected |= {f"structures/{name}": mask for name, mask in phantom_case.structures.items()}
    assert sorted(str(p.relative_to(out))[: -len(".nrrd")] for p in out.rglob("*.nrrd")) == sorted(expected)
    for name, volume in expected.items():
        read = read_volume(out / f"{name}.nrrd")
        assert read.same_grid(phantom_case.ct), name
        np.testing.assert_array_equal(read.array, volume.array, err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned", "phantom"]


def _rename(folder: Path, old: str, new: str) -> None:
    (folder / "structures" / f"{old}.nrrd").rename(folder / "structures" / f"{new}.nrrd")


def _structure_names(out: Path) -> set[str]:
    return {p.name[: -len(".nrrd")] for p in (out / "structures").glob("*.nrrd")}


def test_align_maps_tg263_names(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for old, new in [("LeftParotid", "Parotid_L"), ("Mandible", "Bone_Mandible"), ("PTV70", "PTV_70")]:
        _rename(phantom_dir, old, new)
    assert run_cli(capsys, "align", phantom_dir, "-o", tmp_path / "out")[0] == 0
    assert {"LeftParotid", "Mandible", "PTV70"} <= _structure_names(tmp_path / "out")


def test_align_with_names_json(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _rename(phantom_dir, "SpinalCord", "Cord_planning")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"Cord_planning": "SpinalCord"}))
    assert run_cli(capsys, "align", phantom_dir, "-o", tmp_path / "plain")[0] == 0
    assert "Cord_planning" in _structure_names(tmp_path / "plain")
    assert run_cli(capsys, "align", phantom_dir, "-o", tmp_path / "mapped", "--names", names)[0] == 0
    mapped = _structure_names(tmp_path / "mapped")
    assert "SpinalCord" in mapped and "Cord_planning" not in mapped


def _write_nrrd(path: Path, array: np.ndarray) -> None:
    nrrd.write(str(path), array, {"space": "left-posterior-superior"})


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-500])


def _shift(path: Path, millimetres: float) -> None:
    volume = read_volume(path)
    origin = (volume.origin[0] + millimetres, *volume.origin[1:])
    write_volume(path, Volume(volume.array, volume.spacing, origin, volume.direction))


BAD_PATIENTS: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "missing_ct": ("ct.nrrd", Path.unlink, "file not found"),
    "truncated_ct": ("ct.nrrd", _truncate, "unreadable or truncated NRRD"),
    "2d_dose": ("dose.nrrd", lambda p: _write_nrrd(p, np.zeros((5, 5), np.float32)), "found 2D"),
    "4d_structure": ("structures/Brainstem.nrrd", lambda p: _write_nrrd(p, np.ones((2, 3, 3, 3), np.uint8)), "4D"),
    "nan_dose": ("dose.nrrd", lambda p: _write_nrrd(p, np.full((4, 4, 4), np.nan, np.float32)), "NaN"),
    "negative_dose": ("dose.nrrd", lambda p: _write_nrrd(p, -np.ones((4, 4, 4), np.float32)), "negative values"),
    "empty_structure": ("structures/Larynx.nrrd", lambda p: _write_nrrd(p, np.zeros((3, 3, 3), np.uint8)), "empty"),
    "corrupt_mask": ("possible_dose_mask.nrrd", lambda p: p.write_text("NRRD0004\ntype: what\n"), "unreadable"),
    "no_overlap": ("structures/Esophagus.nrrd", lambda p: _shift(p, 1000.0), "'Esophagus' does not overlap the CT"),
}


@pytest.mark.parametrize("kind", BAD_PATIENTS)
def test_bad_input_fails_cleanly(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash, kind: str
) -> None:
    relative, corrupt, problem = BAD_PATIENTS[kind]
    corrupt(phantom_dir / relative)
    before = tree_hash(phantom_dir)
    code, out, err = run_cli(capsys, "align", phantom_dir, "-o", tmp_path / "out")
    assert code == 1 and out == ""
    assert err.startswith("doseseg: error: ") and err.count("\n") == 1
    assert problem in err
    if kind != "no_overlap":  # alignment errors name the structure, reading errors the file
        assert str(phantom_dir / relative) in err
    assert tree_hash(phantom_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]


def test_missing_patient_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "align", tmp_path / "nobody", "-o", tmp_path / "out")
    assert code == 1 and "nobody: patient folder not found" in err
    assert not (tmp_path / "out").exists()


def test_existing_results_are_kept_unless_forced(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash
) -> None:
    from DoseSegLib.io.outputs import staged_output

    out = tmp_path / "out"
    with staged_output(out, False, []) as earlier:
        (earlier / "report.html").write_text("earlier results")
    before = tree_hash(out)
    code, _, err = run_cli(capsys, "align", phantom_dir, "-o", out)
    assert code == 1 and err.count("\n") == 1
    assert f"{out}: output folder already holds results" in err
    assert tree_hash(out) == before
    assert run_cli(capsys, "align", phantom_dir, "-o", out, "--force")[0] == 0
    assert (out / "ct.nrrd").is_file() and not (out / "report.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "phantom"]


def test_output_into_the_input_is_refused(
    phantom_dir: Path, capsys: pytest.CaptureFixture, tree_hash: TreeHash
) -> None:
    before = tree_hash(phantom_dir)
    for out in (phantom_dir, phantom_dir / "aligned", phantom_dir.parent):
        code, _, err = run_cli(capsys, "align", phantom_dir, "-o", out, "--force")
        assert code == 1 and "overlaps the input" in err
    assert tree_hash(phantom_dir) == before


def test_structure_partly_outside_is_clipped_with_a_warning(
    phantom_dir: Path, phantom_case: Case, tmp_path: Path, capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _shift(phantom_dir / "structures" / "LeftParotid.nrrd", 20 * phantom_case.ct.spacing[0])
    with caplog.at_level(logging.WARNING):
        assert run_cli(capsys, "align", phantom_dir, "-o", tmp_path / "out")[0] == 0
    assert any("LeftParotid" in r.getMessage() and "clipped" in r.getMessage() for r in caplog.records)
    clipped = read_volume(tmp_path / "out" / "structures" / "LeftParotid.nrrd").array
    assert 0 < clipped.sum() < phantom_case.structures["LeftParotid"].array.sum()
    assert clipped[-1].any()  # cut at the CT's left edge


def test_console_command_exit_codes(phantom_dir: Path, tmp_path: Path) -> None:
    """The real process: warnings and errors on stderr, exit status 0 or 1."""
    command = [sys.executable, "-m", "DoseSegLib.cli.main", "align", str(phantom_dir), "-o"]
    _shift(phantom_dir / "structures" / "LeftParotid.nrrd", 80.0)
    done = subprocess.run([*command, str(tmp_path / "a")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "WARNING" in done.stderr and "LeftParotid" in done.stderr
    (phantom_dir / "ct.nrrd").unlink()
    done = subprocess.run([*command, str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "ct.nrrd: file not found" in done.stderr
    assert not (tmp_path / "b").exists()


def test_unexpected_errors_are_one_line_unless_verbose(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import DoseSegLib.core.alignment

    def broken(case):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(DoseSegLib.core.alignment, "align_case", broken)
    assert main(["align", str(phantom_dir), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "doseseg: error: unexpected RuntimeError: simulated failure (run with -v for the traceback)"
    assert not (tmp_path / "out").exists()
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(["-v", "align", str(phantom_dir), "-o", str(tmp_path / "out")])

