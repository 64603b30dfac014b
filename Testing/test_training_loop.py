"""The epoch loop shared by train-dose, train-seg and train-features."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from DoseSegLib.models.common.training_loop import RunConfig, Validation, cosine_lr, run_epochs, train_epoch


class TinyNet(torch.nn.Linear):
    """A one-weight network with the ``config.to_dict()`` that weight files record."""

    class Config:
        def to_dict(self) -> dict:
            return {"tiny": True}

    def __init__(self) -> None:
        super().__init__(1, 1)
        self.config = self.Config()


def _run(out: Path, config: RunConfig, scores: list[float], maximize: bool = False) -> tuple[dict, list[int], int]:
    """run_epochs with a validation that returns ``scores`` in turn; returns (result, epochs trained, fresh starts)."""
    trained, fresh, pending = [], [], list(scores)

    def make_step(epoch: int):
        trained.append(epoch)
        return lambda indices, rng: {"loss": (net.weight * 0).sum() + 1.0 / epoch}

    def validate(epoch: int) -> Validation:
        score = pending.pop(0)
        return Validation(score, {"val_score": score}, {"epoch": epoch})

    columns = ("epoch", "train_loss", "val_score", "lr", "seconds")
    net = TinyNet()
    result = run_epochs(out, net, config, torch.device("cpu"), columns, 1, make_step, validate, maximize,
                        on_fresh_start=lambda: fresh.append(True))
    return result, trained, len(fresh)


def _log(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_early_stopping_keeps_the_best_validation(tmp_path: Path) -> None:
    result, trained, fresh = _run(tmp_path, RunConfig(epochs=10, patience=2), [3.0, 2.0, 2.5, 2.6, 2.7])
    assert trained == [1, 2, 3, 4] and fresh == 1
    assert result == {"best": 2.0, "best_values": {"val_score": 2.0}, "epochs": 4}
    assert torch.load(tmp_path / "best.pt", weights_only=True)["meta"] == {"epoch": 2}
    rows = _log(tmp_path)
    assert [r["val_score"] for r in rows] == ["3", "2", "2.5", "2.6"] and rows[0]["train_loss"] == "1"


def test_higher_is_better_when_maximizing(tmp_path: Path) -> None:
    result, _, _ = _run(tmp_path, RunConfig(epochs=3), [0.5, 0.7, 0.6], maximize=True)
    assert result["best"] == 0.7
    assert torch.load(tmp_path / "best.pt", weights_only=True)["meta"] == {"epoch": 2}


def test_validation_every_n_epochs_and_after_the_last(tmp_path: Path) -> None:
    _run(tmp_path, RunConfig(epochs=5, val_every=2), [1.0, 0.9, 0.8])
    assert [r["val_score"] for r in _log(tmp_path)] == ["nan", "1", "nan", "0.9", "0.8"]


def test_time_limit_stops_after_a_validated_epoch(tmp_path: Path) -> None:
    result, trained, _ = _run(tmp_path, RunConfig(epochs=10, val_every=5, max_minutes=1e-9), [1.5])
    assert trained == [1] and result["best"] == 1.5  # epoch 1 was validated although val_every is 5
    assert (tmp_path / "best.pt").is_file()


def test_resume_continues_from_last_pt(tmp_path: Path) -> None:
    _run(tmp_path, RunConfig(epochs=2), [2.0, 1.0])
    result, trained, fresh = _run(tmp_path, RunConfig(epochs=3), [1.5])
    assert trained == [3] and fresh == 0
    assert result == {"best": 1.0, "best_values": {"val_score": 1.0}, "epochs": 3}
    assert [r["epoch"] for r in _log(tmp_path)] == ["1", "2", "3"]


def test_cosine_learning_rate_follows_epochs_or_time() -> None:
    config = RunConfig(epochs=10, lr=1e-3, min_lr=1e-5)
    assert cosine_lr(config, 0, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(config, 5, 0.0) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(config, 10, 0.0) == pytest.approx(1e-5)
    timed = RunConfig(epochs=1000, lr=1e-3, min_lr=1e-5, max_minutes=10.0)
    assert cosine_lr(timed, 1, 5.0) == pytest.approx((1e-3 + 1e-5) / 2)
    assert math.isclose(cosine_lr(timed, 1, 20.0), 1e-5)


def test_train_epoch_visits_every_item_once_descends_and_averages_each_term() -> None:
    net = TinyNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    seen = []

    def step(indices, rng):
        seen.extend(int(i) for i in indices)
        loss = ((net(torch.ones(len(indices), 1)) - 1.0) ** 2).mean()
        return {"loss": loss, "size": torch.tensor(float(len(indices)))}

    before = net.weight.detach().clone()
    values = train_epoch(net, optimizer, 5, RunConfig(batch_size=2), 1, step)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert values["train_size"] == pytest.approx(5 / 3) and set(values) == {"train_loss", "train_size"}
    assert not torch.equal(net.weight, before)
