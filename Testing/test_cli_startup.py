"""``doseseg`` parses its arguments without the heavy libraries: help, version and usage errors stay fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai", "pydicom", "SimpleITK", "radiomics", "matplotlib", "scipy")

# Runs ``doseseg ARGV`` in a fresh interpreter and prints which heavy modules it loaded, as JSON.
PROBE = """
import json, sys
from DoseSegLib.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def loaded_by(*argv: str, cwd: Path) -> tuple[object, list[str], str]:
    """Exit code, heavy modules loaded, and stderr of ``doseseg argv`` run in a new Python process."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], report["loaded"], result.stderr


@pytest.mark.parametrize("argv", [("--help",), ("--version",), ("no-such-command",), ("run",),
                                  ("run", "p", "-o", "o", "--device", "tpu"),
                                  ("run", "p", "-o", "o", "--dvh-method", "exact"),
                                  ("train-dose", "--data", "d", "--out", "o", "--patch", "96")],
                         ids=["help", "version", "unknown-command", "missing-argument", "bad-device",
                              "bad-dvh-method", "bad-patch"])
def test_help_version_and_usage_errors_load_no_heavy_library(argv: tuple[str, ...], tmp_path: Path) -> None:
    code, loaded, _ = loaded_by(*argv, cwd=tmp_path)
    assert code in (0, 2)
    assert loaded == []


def test_every_command_help_loads_no_heavy_library(tmp_path: Path) -> None:
    from DoseSegLib.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert len(sub.choices) > 15
    for command in sub.choices:  # every command, new ones included
        code, loaded, stderr = loaded_by(command, "--help", cwd=tmp_path)
        assert (code, loaded) == (0, []), (command, stderr)


def test_missing_patient_folder_is_reported_before_the_models_load(tmp_path: Path) -> None:
    code, loaded, stderr = loaded_by("run", str(tmp_path / "no_patient"), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert code == 1
    assert "no_patient: patient folder not found" in stderr
    assert loaded == []
    assert not (tmp_path / "out").exists()


TRAINERS = {  # command: (module, training function, the config it must build when no option is given)
    "train-dose": ("DoseSegLib.models.dose.training", "train_dose", "TrainConfig", {}),
    "train-dose-refiner": ("DoseSegLib.models.dose.refine_training", "train_refiner", "RefineConfig",
                           {"moment_weight": 0.05}),
    "train-seg": ("DoseSegLib.models.seg.training", "train_segmentation", "SegTrainConfig", {}),
    "train-features": ("DoseSegLib.models.features.training", "train_features", "FeatureTrainConfig", {}),
}


def _config_built_by(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, *options: str) -> object:
    import importlib
    from collections import defaultdict

    from DoseSegLib.cli.main import main

    module, function, _, _ = TRAINERS[command]
    built = []
    monkeypatch.setattr(importlib.import_module(module), function,
                        lambda data, out, config, **kwargs: built.append(config) or defaultdict(float))
    assert main([command, "--data", str(tmp_path), "--out", str(tmp_path / "run"), *options]) == 0
    return built[0]


@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_training_commands_use_the_config_dataclass_defaults(command: str, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    import importlib

    module, _, config_class, cli_defaults = TRAINERS[command]
    expected = getattr(importlib.import_module(module), config_class)(**cli_defaults)
    assert _config_built_by(monkeypatch, tmp_path, command) == expected


def test_training_options_reach_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _config_built_by(monkeypatch, tmp_path, "train-dose", "--channels", "8", "16", "32", "--patch", "32",
                              "32", "16", "--dropout", "0.2", "--elastic-prob", "0.5", "--epochs", "3")
    assert (config.net.channels, config.net.strides, config.net.dropout) == ((8, 16, 32), (2, 2), 0.2)
    assert (config.patch, config.augment.elastic_prob, config.epochs) == ((32, 32, 16), 0.5, 3)
    config = _config_built_by(monkeypatch, tmp_path, "train-seg", "--inputs", "ct.nrrd,pet.nrrd", "--no-se",
                              "--loss", "doselo", "--lambda", "0.5")
    assert (config.inputs.images, config.net.squeeze_excitation, config.loss, config.dose_weight) == (
        ("ct.nrrd", "pet.nrrd"), False, "doselo", 0.5)
    config = _config_built_by(monkeypatch, tmp_path, "train-features", "--grid", "32", "--latent", "8")
    assert (config.inputs.grid, config.net.latent) == ((32, 32, 32), 8)
