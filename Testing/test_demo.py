"""``doseseg demo``: the whole product on the synthetic phantom, every output checked."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from model_helpers import write_tiny_catalogue

from DoseSegLib.cli.main import main
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.outputs import MARKER
from DoseSegLib.io.patient import read_segmentation, read_volume
from DoseSegLib.io.phantom import make_phantom
from DoseSegLib.io.tables import read_csv

OUTPUTS = {
    "dose.nrrd", "segmentation.seg.nrrd", "dvh.csv", "dvh_metrics.csv", "constraints.csv", "radiomics.csv",
    "summary.json", "report.html", "dose_difference.nrrd", "comparison.csv", "dvh_reference.csv", "gamma.csv",
    "radiomics.json", "dvh_errors.csv",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The output folder of one ``doseseg demo`` run with the tiny test catalogue."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOSESEG_MODELS", str(write_tiny_catalogue(root / "models")))
        assert main(["demo", "-o", str(root / "out"), "--device", "cpu"]) == 0
    yield root / "out"


@pytest.fixture(scope="module")
def phantom_structures() -> set[str]:
    return set(make_phantom().structures)


def test_demo_writes_every_output(demo: Path) -> None:
    assert {p.name for p in demo.iterdir()} == OUTPUTS | {MARKER}


def _on_ct_voxels(volume: Volume, ct: Volume) -> bool:
    """``volume`` is a box of ``ct``'s grid: same axes and spacing, origin on a CT voxel centre."""
    start = np.linalg.solve(ct.index_to_lps, np.append(volume.origin, 1.0))[:3]
    return (np.allclose(volume.spacing, ct.spacing) and np.allclose(volume.direction, ct.direction)
            and np.allclose(start, np.round(start), atol=1e-4) and bool(np.all(np.round(start) >= 0))
            and bool(np.all(np.round(start) + volume.shape <= ct.shape)))


def test_volumes_are_on_the_ct_grid(demo: Path, phantom_structures: set[str]) -> None:
    ct = make_phantom().ct
    for name in ("dose.nrrd", "dose_difference.nrrd"):
        volume = read_volume(demo / name)
        assert _on_ct_voxels(volume, ct), name
    assert read_volume(demo / "dose.nrrd").array.min() >= 0
    segments = read_segmentation(demo / "segmentation.seg.nrrd")
    assert set(segments) == phantom_structures
    assert all(_on_ct_voxels(mask, ct) for mask in segments.values())


def test_tables_cover_every_structure(demo: Path, phantom_structures: set[str]) -> None:
    dvh = read_csv(demo / "dvh.csv", ("structure", "dose_gy", "volume_cc", "volume_pct"))
    assert {row["structure"] for row in dvh} == phantom_structures
    assert all(float(row["volume_pct"]) == 100.0 for row in dvh if float(row["dose_gy"]) == 0.0)
    metrics = read_csv(demo / "dvh_metrics.csv", ("structure", "Mean[Gy]", "D95%[Gy]", "D0.1cc[Gy]"))
    assert sorted(row["structure"] for row in metrics) == sorted(phantom_structures)
    assert {row["structure"] for row in read_csv(demo / "dvh_reference.csv")} == phantom_structures
    constraints = read_csv(demo / "constraints.csv", ("structure", "metric", "result"))
    assert constraints and {row["result"] for row in constraints} <= {"pass", "fail", "not evaluated"}
    radiomics = read_csv(demo / "radiomics.csv", ("structure", "original_firstorder_Mean"))
    assert {row["structure"] for row in radiomics} == phantom_structures


def test_summary_names_the_models_and_the_comparison(demo: Path) -> None:
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["patient"] == "demo_phantom"
    assert "phantom" in summary["source"] and "tmp" not in summary["source"]  # not a deleted temporary folder
    assert summary["prescription_gy"] == 70.0
    assert summary["models"]["dose"]["name"] == "tiny-dose"
    assert re.fullmatch(r"[0-9a-f]{64}", summary["models"]["dose"]["sha256"])
    assert summary["comparison"]["dose_error_gy"] >= 0 and summary["comparison"]["dvh_error_gy"] >= 0
    assert {"load models", "predict dose", "radiomics", "report", "write"} <= set(summary["timings_s"])


def test_report_is_self_contained_with_images_and_tables(demo: Path, phantom_structures: set[str]) -> None:
    report = (demo / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)
    assert len(images) == 3  # dose planes, DVH, dose difference
    assert all(base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert not re.search(r'(src|href)="(?!data:)', report)  # nothing fetched from elsewhere
    for heading in ("DVH metrics", "Clinical goals", "Predicted vs reference dose", "Radiomics", "Models"):
        assert heading in report
    assert report.count("<table") >= 6
    assert all(f"<td>{name}</td>" in report for name in phantom_structures)
    assert "tiny-dose" in report


def test_demo_refuses_an_existing_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, _, stderr = run_cli(capsys, "demo", "-o", out)
    assert code == 1 and "--force" in stderr
    assert (out / "mine.txt").read_text() == "keep"
