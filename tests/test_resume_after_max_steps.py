"""A run that `trainer.max_steps` ended, resumed, ends as a straight run does, bit for bit: an
epoch it cut is saved unfinished (at its next batch, its schedule unmoved), never skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnn_train.engine.trainer import run_training
from tests.helpers import QUICK, compose_config, read_metrics

# 32 images in batches of 16: 2 steps an epoch, 4 in the run. The per-epoch schedule halves the
# LR each epoch, so an epoch counted as done too soon shows in the weights; epoch-0.pt is the
# straight run's state at the end of its first epoch.
RUN = [
    *QUICK,
    "data.train_samples=32",
    "model=vgg16",
    "trainer.epochs=2",
    "trainer.limit_val_batches=1",
    "trainer.save_every_epochs=1",
    "scheduler=step",
    "scheduler.step_size=1",
    "scheduler.gamma=0.5",
    "tracking.image_grid=false",
]


def train(run_dir: Path, *overrides: str) -> dict[str, Any]:
    """Run (or resume) `RUN` in `run_dir`; return its checkpoints/last.pt."""
    run_training(compose_config("train", [*RUN, *overrides]), run_dir)
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_same_training_state(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    """The same step, and the same weights and optimizer state bit for bit."""
    assert actual["step"] == expected["step"]
    assert_bitwise_equal(expected["model"], actual["model"])
    assert_bitwise_equal(expected["optimizer"], actual["optimizer"])


def assert_bitwise_equal(expected: Any, actual: Any) -> None:
    """Equal tensors, bit for bit, in the same nesting of dicts and lists."""
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys()
        for key, value in expected.items():
            assert_bitwise_equal(value, actual[key])
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual)
        for one, other in zip(expected, actual, strict=True):
            assert_bitwise_equal(one, other)
    else:
        assert expected == actual


def test_stops_by_max_steps_mid_epoch_and_at_its_end_resume_to_the_straight_run(
    tmp_path: Path,
) -> None:
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    final = train(straight)
    first_epoch = torch.load(straight / "checkpoints" / "epoch-0.pt", weights_only=True)
    assert final["step"] == 4 and first_epoch["step"] == 2

    mid = train(cut, "trainer.max_steps=1")  # one batch into the first epoch
    assert (mid["step"], mid["epoch"], mid["batch_in_epoch"], mid["epoch_done"]) == (1, 0, 1, False)
    assert [record["step"] for record in read_metrics(cut)] == [1]  # the cut epoch is reported

    end = train(cut, "resume=auto", "trainer.max_steps=2")  # the first epoch's last batch
    assert (end["epoch"], end["batch_in_epoch"], end["epoch_done"]) == (0, 2, True)
    assert_same_training_state(first_epoch, end)

    assert_same_training_state(final, train(cut, "resume=auto"))
    assert [record["step"] for record in read_metrics(cut)] == [2, 4]
