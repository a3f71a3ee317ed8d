"""Optimizers and LR schedules as the configs build them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_train.config_checks import check_train_config
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.models import build_model
from cnn_train.optim import build_optimizer, build_schedule
from tests.helpers import compose_config


def config(*overrides: str):
    return compose_config("train", ["device=cpu", *overrides])


def lrs(cfg, steps_per_epoch: int, epochs: int, metrics: list[float] | None = None) -> list:
    """The LR each iteration trains with, stepping the schedule as the trainer does."""
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    optimizer = build_optimizer(cfg.optimizer, model)
    total = steps_per_epoch * epochs
    schedule = build_schedule(cfg.scheduler, optimizer, total, cfg.optimizer.lr, steps_per_epoch)
    seen = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step_iteration()
        schedule.step_epoch(metrics[epoch] if metrics else 0.5)
    return seen


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_builds_and_skips_decay_on_norms_and_biases(name: str) -> None:
    cfg = config(f"optimizer={name}", "optimizer.weight_decay=0.01")
    model = build_model("resnet34", 10, "small")
    optimizer = build_optimizer(cfg.optimizer, model)
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and undecayed["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"])
    assert all(p.ndim == 1 for p in undecayed["params"])
    total = sum(len(group["params"]) for group in optimizer.param_groups)
    assert total == len(list(model.parameters()))


def test_decay_norm_and_bias_puts_every_parameter_under_weight_decay() -> None:
    cfg = config("optimizer.weight_decay=0.01", "optimizer.decay_norm_and_bias=true")
    (group,) = build_optimizer(cfg.optimizer, build_model("resnet34", 10, "small")).param_groups
    assert group["weight_decay"] == 0.01


def test_multistep_divides_at_its_milestone_epochs() -> None:
    cfg = config("optimizer.lr=0.1", "scheduler=multistep", "scheduler.milestones=[2,3]")
    seen = lrs(cfg, steps_per_epoch=2, epochs=4)
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_plateau_divides_by_ten_when_the_val_metric_stops_improving() -> None:
    cfg = config("optimizer.lr=0.1", "scheduler=plateau", "scheduler.patience=1")
    seen = lrs(cfg, steps_per_epoch=1, epochs=5, metrics=[0.1, 0.2, 0.2, 0.2, 0.2])
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01])


def test_warmup_ramps_linearly_per_iteration_then_hands_over() -> None:
    cfg = config(
        "optimizer.lr=0.1",
        "scheduler=cosine",
        "scheduler.warmup_epochs=1",
        "scheduler.warmup_start_factor=0.25",
    )
    seen = lrs(cfg, steps_per_epoch=4, epochs=3)
    assert seen[:5] == pytest.approx([0.025, 0.04375, 0.0625, 0.08125, 0.1])
    assert seen[5] < 0.1 and seen[-1] < seen[5]


def test_step_schedule_keeps_its_epochs_with_warmup() -> None:
    cfg = config("optimizer.lr=0.1", "scheduler=step", "scheduler.step_size=2")
    cfg.scheduler.warmup_epochs = 1
    seen = lrs(cfg, steps_per_epoch=2, epochs=3)
    assert seen[0] == pytest.approx(0.001) and seen[2:4] == pytest.approx([0.1, 0.1])
    assert seen[4] == pytest.approx(0.01)


def test_onecycle_rejects_a_second_warmup() -> None:
    cfg = config("scheduler=onecycle")
    cfg.scheduler.warmup_epochs = 1
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(UserError, match=r"scheduler\.warmup_epochs=0"):
        build_schedule(cfg.scheduler, optimizer, 10, 0.1, 5)


def test_negative_warmup_is_a_user_error() -> None:
    cfg = config("scheduler=cosine", "scheduler.warmup_epochs=-1")
    with pytest.raises(UserError, match=r"scheduler\.warmup_epochs must be in \[0, "):
        check_train_config(cfg)  # the run checks its config before it builds anything


def test_a_plateau_run_resumes_with_its_schedule(train_config, tmp_path) -> None:
    overrides = ("scheduler=plateau", "scheduler.patience=0", "optimizer=rmsprop")
    first = tmp_path / "first"
    first.mkdir()
    run_training(train_config(*overrides, "trainer.epochs=1", "scheduler.warmup_epochs=0.5"), first)
    state = torch.load(first / "checkpoints" / "last.pt", weights_only=True)
    assert state["scheduler"]["iterations"] == 4 and state["scheduler"]["warmup"]
    second = tmp_path / "second"
    second.mkdir()
    resumed = run_training(
        train_config(*overrides, "trainer.epochs=2", f"resume={first}"),
        second,
    )
    assert resumed["step"] == 8


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_sgd_adam_and_adamw_update_with_the_fused_kernels_on_the_cpu(name: str) -> None:
    optimizer = build_optimizer(
        compose_config("train", [f"optimizer={name}"]).optimizer, torch.nn.Linear(4, 2)
    )
    assert optimizer.defaults["fused"]
