"""Issue #28, items 7, 8 and 13: NRRD files are read within bounds and written so that every reader opens them."""

from __future__ import annotations

import bz2
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import nrrd
import numpy as np
import pytest

from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.limits import LIMIT_VARIABLE, max_volume_bytes
from DoseSegLib.io.nrrd_read import read_nrrd
from DoseSegLib.io.patient import read_dose, read_segmentation, read_volume, write_dose, write_volume

REPO = Path(__file__).resolve().parents[1]
HEADER = "NRRD0004\ntype: {type}\ndimension: 3\nsizes: {sizes}\nendian: little\nencoding: {encoding}\n{extra}"


def _nrrd(path: Path, data: bytes = b"", sizes: str = "2 3 4", encoding: str = "raw", type: str = "int16",
          extra: str = "") -> Path:
    text = HEADER.format(type=type, sizes=sizes, encoding=encoding, extra=extra)
    path.write_bytes(text.encode() + (b"\n" + data if "data file" not in extra else b""))
    return path


# --- the reader agrees with pynrrd on valid files (an outside reference) -----------------------------------

@pytest.mark.parametrize("options", [
    {"encoding": "raw"}, {"encoding": "gzip"}, {"encoding": "bzip2"}, {"encoding": "ascii"},
    {"encoding": "raw", "endian": "big"}, {"encoding": "raw", "detached_header": True},
    {"encoding": "gzip", "detached_header": True},
])
def test_valid_files_read_as_pynrrd_reads_them(tmp_path: Path, options: dict) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    path = tmp_path / ("v.nhdr" if options.get("detached_header") else "v.nrrd")
    header = {"space": "left-posterior-superior", "space directions": np.diag([1.0, 2.0, 3.0]),
              "space origin": [1.0, 2.0, 3.0], **{k: v for k, v in options.items() if k != "detached_header"}}
    nrrd.write(str(path), array, header, detached_header=bool(options.get("detached_header")))
    ours, _ = read_nrrd(path)
    theirs, _ = nrrd.read(str(path))
    np.testing.assert_array_equal(ours, theirs)
    assert ours.dtype == np.float32 and ours.dtype.isnative and ours.flags.writeable


@pytest.mark.parametrize("skip", ["byte skip: 10", "byte skip: -1", "line skip: 2"])
def test_skips_read_as_pynrrd_reads_them(tmp_path: Path, skip: str) -> None:
    values = np.arange(24, dtype=np.int16).tobytes(order="F")
    prefix = {"byte skip: 10": b"x" * 10, "byte skip: -1": b"junk", "line skip: 2": b"a\nb\n"}[skip]
    path = _nrrd(tmp_path / "s.nrrd", prefix + values, extra=f"{skip}\n")
    np.testing.assert_array_equal(read_nrrd(path)[0], nrrd.read(str(path))[0])


# --- 7. detached data only in the header's own folder -------------------------------------------------------

@pytest.mark.parametrize("target", ["/etc/passwd", "../secret.raw", "sub/data.raw", "link.raw", "/dev/urandom",
                                    "fifo.raw", "LIST", "img%03d.raw 1 3 1"])
def test_detached_data_outside_the_headers_folder_is_refused(tmp_path: Path, target: str) -> None:
    folder = tmp_path / "patient"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "secret.raw").write_bytes(b"s" * 48)
    (folder / "sub" / "data.raw").write_bytes(b"s" * 48)
    (folder / "link.raw").symlink_to(tmp_path / "secret.raw")
    os.mkfifo(folder / "fifo.raw")
    header = _nrrd(folder / "dose.nhdr", extra=f"data file: {target}\n")
    with pytest.raises(DoseSegError) as error:
        read_volume(header)
    message = str(error.value)
    assert message.startswith(str(header)) and "\n" not in message
    assert any(word in message for word in ("header's own folder", "links out", "not a regular file",
                                            "several files"))
    assert "ssssss" not in message


def test_detached_data_beside_the_header_is_read(tmp_path: Path) -> None:
    (tmp_path / "ct.raw").write_bytes(np.arange(24, dtype=np.int16).tobytes())
    header = _nrrd(tmp_path / "ct.nhdr", extra="data file: ct.raw\n")
    assert read_volume(header).array.sum() == sum(range(24))


def test_a_dose_naming_etc_passwd_never_reaches_the_outputs(phantom_dir: Path, tmp_path: Path) -> None:
    """The issue's case: the detached dose's bytes were copied into the output dose."""
    from DoseSegLib.cli.main import main

    (phantom_dir / "dose.nrrd").unlink()
    _nrrd(phantom_dir / "dose.nhdr", sizes="10 10 10", type="uint8", extra="data file: /etc/passwd\n")
    (phantom_dir / "dose.nrrd").symlink_to(phantom_dir / "dose.nhdr")
    assert main(["align", str(phantom_dir), "-o", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


# --- 8. sizes checked before allocating, bounded decompression, absurd fields refused -----------------------

def _bomb(inflated: int, encoding: str = "gzip") -> bytes:
    """``inflated`` zero bytes compressed, made a MB at a time (the test's own peak memory stays low)."""
    import zlib

    encoder = zlib.compressobj(9, zlib.DEFLATED, 31) if encoding == "gzip" else bz2.BZ2Compressor(9)
    block = b"\0" * (1 << 20)
    parts = [encoder.compress(block) for _ in range(inflated >> 20)]
    return b"".join([*parts, encoder.flush()])


@pytest.mark.parametrize("case", ["huge declared gzip", "zip bomb", "bzip2 bomb", "huge raw", "line skip",
                                  "byte skip", "negative size", "zero size", "4D", "line skip past the end"])
def test_hostile_sizes_fail_fast_and_small(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x.nrrd"
    if case == "huge declared gzip":  # the 4096 x 4096 x 512 (17 GB of float32)
        _nrrd(path, _bomb(1 << 20), sizes="4096 4096 512", type="float", encoding="gzip")
    elif case == "zip bomb":  # declares 24 int16, inflates to 200 MB
        _nrrd(path, _bomb(200 << 20), encoding="gzip")
    elif case == "bzip2 bomb":
        _nrrd(path, _bomb(100 << 20, "bzip2"), encoding="bzip2")
    elif case == "huge raw":
        _nrrd(path, b"\0" * 100, sizes="100000 100000 100000")
    elif case == "line skip":
        _nrrd(path, b"\0" * 48, extra="line skip: 99999999999\n")
    elif case == "byte skip":
        _nrrd(path, b"\0" * 48, extra="byte skip: 99999999999\n")
    elif case == "negative size":
        _nrrd(path, b"\0" * 48, sizes="2 -3 4")
    elif case == "zero size":
        _nrrd(path, b"", sizes="2 0 4")
    elif case == "4D":
        path.write_bytes(b"NRRD0004\ntype: int16\ndimension: 4\nsizes: 1 2 3 4\nencoding: raw\n\n" + b"\0" * 48)
    else:
        _nrrd(path, b"\x01" * 100, extra="line skip: 1\n")  # no newline left: the skip runs past the end
    tracemalloc.start()
    try:
        with pytest.raises(DoseSegError) as error:
            read_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
    assert peak < 8 << 20  # far below the bombs' 100-200 MB (Python and NumPy allocations are traced)


def test_the_size_limit_is_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ct.nrrd"
    write_volume(path, Volume(np.zeros((50, 50, 50), np.int16), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    monkeypatch.setenv(LIMIT_VARIABLE, "0.0002")  # 200 kB: below this 250 kB CT
    with pytest.raises(DoseSegError, match=f"above the 0.0002 GB limit.*{LIMIT_VARIABLE}"):
        read_volume(path)
    monkeypatch.setenv(LIMIT_VARIABLE, "0.001")
    assert read_volume(path).shape == (50, 50, 50)
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    with pytest.raises(DoseSegError, match="positive number of GB"):
        max_volume_bytes()
    monkeypatch.delenv(LIMIT_VARIABLE)
    assert max_volume_bytes() == 2_000_000_000


def test_a_segmentation_is_read_within_the_limits(tmp_path: Path) -> None:
    path = tmp_path / "bomb.seg.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 3 4\nencoding: gzip\n"
                     b"Segment0_ID:=a\nSegment0_Name:=a\nSegment0_LabelValue:=1\n\n"
                     + _bomb(100 << 20))
    with pytest.raises(DoseSegError, match="inflates past"):
        read_segmentation(path)


@pytest.mark.parametrize("header", ["spacings: 0 1 1\n", "spacings: -1 1 1\n", "spacings: nan 1 1\n",
                                    "space: left-posterior-superior\nspace directions: (1,0,0) (1,0,0) (0,0,1)\n",
                                    "space: left-posterior-superior\nspace origin: (nan,0,0)\n"])
def test_bad_geometry_is_named(tmp_path: Path, header: str) -> None:
    """Zero and negative spacing gave 'unexpected ZeroDivisionError' or 'Brainstem does not overlap the CT'."""
    path = _nrrd(tmp_path / "ct.nrrd", b"\0" * 48, extra=header)
    with pytest.raises(DoseSegError, match=r"ct\.nrrd: '(spacings|space directions|space origin)'"):
        read_volume(path)


# --- 13. every NRRD DoseSeg writes opens in SimpleITK, pynrrd and Slicer ------------------------------------

def test_written_nrrds_open_in_simpleitk_and_pynrrd(tmp_path: Path) -> None:
    import SimpleITK as sitk

    volume = Volume(np.random.default_rng(1).random((4, 5, 6)).astype(np.float32), (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    write_volume(tmp_path / "sens.nrrd", volume, {"SensitivityUnits": "Gy per voxel"})
    write_dose(tmp_path / "dose.nrrd", volume)
    for name in ("sens.nrrd", "dose.nrrd"):
        image = sitk.ReadImage(str(tmp_path / name))
        np.testing.assert_allclose(sitk.GetArrayFromImage(image).transpose(2, 1, 0), volume.array)
        assert image.GetSpacing() == volume.spacing and image.GetOrigin() == volume.origin
        np.testing.assert_array_equal(nrrd.read(str(tmp_path / name))[0], volume.array)
    assert read_dose(tmp_path / "dose.nrrd").array.dtype == np.float32


def test_the_sensitivity_map_opens_everywhere(tmp_path: Path) -> None:
    """The issue's case: ``units: "G" "y" " " ...`` (a string taken as per-axis units) broke ITK and Slicer."""
    import SimpleITK as sitk

    volume = Volume(np.ones((3, 4, 5), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="standard NRRD field"):
        write_volume(tmp_path / "bad.nrrd", volume, {"units": "Gy per voxel"})
    path = tmp_path / "sensitivity.nrrd"
    write_volume(path, volume, {"Structure": "PTV\nspace origin: (9,9,9)", "SensitivityUnits": "Gy per voxel"})
    text = path.read_bytes().split(b"\n\n")[0].decode()
    assert "\nunits:" not in text and "SensitivityUnits:=Gy per voxel" in text
    assert sitk.ReadImage(str(path)).GetSize() == (3, 4, 5)
    assert nrrd.read(str(path))[1]["SensitivityUnits"] == "Gy per voxel"
    assert read_volume(path).origin == (0.0, 0.0, 0.0)  # a name cannot inject a header line


def test_doseseg_writes_no_standard_field_as_a_key_value_pair() -> None:
    """Every ``write_volume(..., {fields})`` call in the library uses plain keys (the class of item 13)."""
    import re

    from nrrd.writer import _NRRD_FIELD_ORDER

    calls = [m for f in (REPO / "DoseSegLib").rglob("*.py")
             for m in re.findall(r"write_volume\([^\n]*?\{([^}]*)\}", f.read_text())]
    keys = {k for call in calls for k in re.findall(r'"([^"]+)":', call)}
    assert keys and "SensitivityUnits" in keys and not keys & set(_NRRD_FIELD_ORDER)


def test_reading_never_needs_much_more_memory_than_the_volume(tmp_path: Path) -> None:
    """A 64 MB CT (gzip) reads with at most twice its size in peak memory (its inflated bytes are the array)."""
    path = tmp_path / "ct.nrrd"
    write_volume(path, Volume(np.zeros((256, 256, 256), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    script = textwrap.dedent(f"""
        import resource
        from DoseSegLib.io.patient import read_volume
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        volume = read_volume({str(path)!r})
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) < 3 * 64  # MB: the volume, its inflated bytes, slack
