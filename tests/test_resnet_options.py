"""ResNet-34's zero-init of residual blocks and stochastic depth, and `optimizer.lr_base_batch`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tv_models

from cnn_train.distributed import resolve_context
from cnn_train.engine.setup import build_parts, scale_lr_to_batch
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.models import build_from_config, build_model
from cnn_train.models.weights import load_weights
from tests.helpers import QUICK, compose_config, read_metrics
from tests.test_weights import torchvision_resnet34  # noqa: F401 (a fixture)


def last_norm_scales(model: nn.Module) -> list[torch.Tensor]:
    """The bn2 weight of every residual block (16 in ResNet-34)."""
    return [module.weight for name, module in model.named_modules() if name.endswith(".bn2")]


def block_drop_rates(model: nn.Module) -> list[float]:
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    return [getattr(block.drop_path, "p", 0.0) for stage in stages for block in stage]


def model_config(*overrides: str):
    return compose_config("train", [*QUICK, *overrides]).model


@pytest.mark.parametrize(
    ("overrides", "zeroed"),
    [
        ((), True),
        (("model.weights=some.pt",), False),
        (("model.zero_init_residual=false",), False),
        (("model.weights=some.pt", "model.zero_init_residual=true"), True),
    ],
)
def test_zero_init_residual_null_is_on_from_scratch_only(overrides, zeroed) -> None:
    model = build_from_config(model_config(*overrides), 10, "small")
    scales = last_norm_scales(model)
    assert len(scales) == 16
    assert all(bool((scale == 0).all()) == zeroed for scale in scales)
    assert bool((model.layer1[0].bn1.weight == 1).all())
    assert bool((model.layer2[0].downsample[1].weight == 1).all())


@pytest.mark.parametrize("drop_path_rate", [0.0, 0.2])
def test_torchvision_weights_give_torchvisions_logits(
    torchvision_resnet34: Path,  # noqa: F811 (the imported fixture)
    drop_path_rate: float,
) -> None:
    overrides = (f"model.weights={torchvision_resnet34}", f"model.drop_path_rate={drop_path_rate}")
    cfg = model_config(*overrides)
    model = build_from_config(cfg, 1000, "imagenet")
    load_weights(model, cfg.weights, cfg.name, "imagenet")
    reference = tv_models.resnet34()
    reference.load_state_dict(torch.load(torchvision_resnet34, weights_only=True))
    assert list(model.state_dict()) == list(reference.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), reference.eval()(images), rtol=0, atol=0)


def test_drop_path_keeps_torchvisions_keys_and_rises_linearly() -> None:
    model = build_from_config(model_config("model.drop_path_rate=0.3"), 1000, "imagenet")
    assert list(model.state_dict()) == list(tv_models.resnet34().state_dict())
    assert block_drop_rates(model) == pytest.approx([0.3 * index / 15 for index in range(16)])
    plain = build_model("resnet34", 10, "small")
    assert all(isinstance(block.drop_path, nn.Identity) for block in plain.layer1)


def test_drop_path_is_random_in_training_and_off_in_evaluation() -> None:
    torch.manual_seed(0)
    model = build_model("resnet34", 10, "small", drop_path_rate=0.5)
    images = torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        assert not torch.equal(model.train()(images), model(images))
        model.eval()
        torch.testing.assert_close(model(images), model(images), rtol=0, atol=0)
        without = build_model("resnet34", 10, "small")
        without.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(images), without.eval()(images), rtol=0, atol=0)


def test_lr_base_batch_scales_to_the_global_batch() -> None:
    cfg = compose_config(
        "train",
        [
            *QUICK,
            "optimizer.lr=0.1",
            "optimizer.lr_base_batch=256",
            "trainer.accumulate_steps=2",
        ],
    )
    scaled = scale_lr_to_batch(cfg, world_size=4)
    assert scaled.optimizer.lr == pytest.approx(0.1 * 4 * 16 * 2 / 256)
    assert scaled.optimizer.lr_base_batch is None
    assert cfg.optimizer.lr == 0.1 and cfg.optimizer.lr_base_batch == 256
    unscaled = compose_config("train", [*QUICK, "optimizer.lr=0.1"])
    assert scale_lr_to_batch(unscaled, world_size=4) is unscaled


def test_a_run_uses_records_and_resumes_the_scaled_lr(train_config, tmp_path: Path) -> None:
    scaling = ["optimizer.lr=0.1", "optimizer.lr_base_batch=64", "scheduler=none"]
    run_training(train_config(*scaling), tmp_path)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["optimizer"]["lr"] == pytest.approx(0.025)
    assert saved["config"]["optimizer"]["lr_base_batch"] is None
    run_training(train_config(*scaling, "trainer.epochs=2", "resume=auto"), tmp_path)
    assert [record["lr"] for record in read_metrics(tmp_path)] == pytest.approx([0.025, 0.025])
    resumed = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["config"]["optimizer"]["lr"] == pytest.approx(0.025)
    other = ["optimizer.lr=0.2", "optimizer.lr_base_batch=64", "scheduler=none"]
    with pytest.raises(UserError, match=r"optimizer\.lr \(0\.025 -> 0\.05\)"):
        run_training(train_config(*other, "trainer.epochs=3", "resume=auto"), tmp_path)


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_schedules_run_from_the_scaled_lr(train_config, tmp_path: Path, scheduler: str) -> None:
    cfg = train_config(f"scheduler={scheduler}", "optimizer.lr=0.1", "optimizer.lr_base_batch=32")
    parts = build_parts(cfg, tmp_path, resolve_context(cfg.device))
    group = parts.optimizer.param_groups[0]
    assert group.get("max_lr", group["initial_lr"]) == pytest.approx(0.05)
    assert parts.config["optimizer"]["lr"] == pytest.approx(0.05)
    assert parts.cfg.optimizer.lr == pytest.approx(0.05)
