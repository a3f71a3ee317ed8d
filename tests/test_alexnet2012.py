"""The paper's two-tower AlexNet, its split over two devices, and their configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cnn_train.checkpoint import load_checkpoint
from cnn_train.config_checks import check_train_config
from cnn_train.engine.trainer import run_training
from cnn_train.errors import UserError
from cnn_train.models import build_model
from cnn_train.models.alexnet2012 import AlexNet2012, TowerLocalResponseNorm
from cnn_train.models.split import SplitAlexNet, group_state_dict, split_alexnet
from tests.helpers import compose_config, run_cli


def small_alexnet(dropout: float = 0.0) -> AlexNet2012:
    torch.manual_seed(0)
    model = build_model("alexnet2012", 10, "imagenet", dropout=dropout)
    assert isinstance(model, AlexNet2012)
    return model


def test_parameter_count_matches_the_paper() -> None:
    model = build_model("alexnet2012", 1000, "imagenet")
    assert sum(p.numel() for p in model.parameters()) == 60_965_224


@pytest.mark.parametrize("name", ["alexnet", "alexnet2012"])
def test_both_alexnets_start_from_he_init(name: str) -> None:
    torch.manual_seed(0)
    layers = [
        module
        for module in build_model(name, 10, "imagenet").modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    for layer in layers[:-1]:
        fan_in = layer.weight[0].numel()  # in_channels / groups x kernel area, or in_features
        assert layer.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
        assert not layer.bias.any()
    assert layers[-1].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert not layers[-1].bias.any()


def test_towers_are_groups_on_conv2_conv4_conv5_only() -> None:
    groups = {
        name: module.groups
        for name, module in AlexNet2012().features.named_children()
        if isinstance(module, nn.Conv2d)
    }
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}


def test_lrn_follows_the_papers_formula_within_each_tower() -> None:
    x = torch.rand(1, 8, 2, 2) * 10
    expected = torch.empty_like(x)
    for tower in range(2):
        maps = x[:, tower * 4 : (tower + 1) * 4]
        for i in range(4):
            window = maps[:, max(0, i - 2) : min(4, i + 3)]
            scale = (2.0 + 1e-4 * window.square().sum(1)) ** 0.75
            expected[:, tower * 4 + i] = maps[:, i] / scale
    torch.testing.assert_close(TowerLocalResponseNorm()(x), expected)


def test_split_gives_the_grouped_outputs_and_gradients() -> None:
    grouped = small_alexnet()
    split = split_alexnet(grouped, ["cpu", "cpu"])
    assert isinstance(split, SplitAlexNet)
    assert split.input_device == split.output_device == torch.device("cpu")
    images = torch.randn(3, 3, 64, 64)
    target = torch.tensor([1, 4, 7])
    ours, theirs = split(images), grouped(images)
    torch.testing.assert_close(ours, theirs)
    nn.functional.cross_entropy(ours, target).backward()
    nn.functional.cross_entropy(theirs, target).backward()
    gradients = group_state_dict({name: p.grad for name, p in split.named_parameters()})
    for name, parameter in grouped.named_parameters():
        torch.testing.assert_close(gradients[name], parameter.grad, rtol=1e-4, atol=1e-6)


def test_split_trains_and_its_state_dict_loads_into_the_grouped_model() -> None:
    split = split_alexnet(small_alexnet(dropout=0.5), ["cpu", "cpu"])
    optimizer = torch.optim.SGD(split.parameters(), lr=0.1)
    images = torch.randn(2, 3, 64, 64)
    nn.functional.cross_entropy(split(images), torch.tensor([0, 1])).backward()
    optimizer.step()
    state = split.state_dict()
    assert "features.conv1.weight" in state and state["features.conv3.weight"].shape[0] == 384
    grouped = build_model("alexnet2012", 10, "imagenet")
    grouped.load_state_dict(state)
    split.eval(), grouped.eval()
    torch.testing.assert_close(split(images), grouped(images))
    again = SplitAlexNet([torch.device("cpu")] * 2, num_classes=10, dropout=0.5)
    again.load_state_dict(state)
    torch.testing.assert_close(again.eval()(images), grouped(images))


def test_split_needs_alexnet2012() -> None:
    with pytest.raises(UserError, match="device=alexnet_split needs model=alexnet2012"):
        split_alexnet(build_model("alexnet", 10, "imagenet"), ["cpu", "cpu"])


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ([], "two devices"),
        (["cpu"], "two devices"),
        (["cpu", "cpu", "cpu"], "two devices"),
        (["cpu", "gpu0"], "'gpu0', not a device"),
        (["cpu", f"cuda:{torch.cuda.device_count()}"], r"device\.devices=\[cuda:0,cpu\]"),
    ],
)
def test_split_needs_two_devices_that_exist(devices: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message) as raised:
        split_alexnet(small_alexnet(), devices)
    assert "device.devices" in str(raised.value) and "\n" not in str(raised.value)


def test_split_config_composes_with_its_model() -> None:
    cfg = compose_config("train", ["model=alexnet2012", "device=alexnet_split"])
    check_train_config(cfg)
    assert cfg.device.name == "alexnet_split" and list(cfg.device.devices) == ["cuda:0", "cuda:1"]
    assert cfg.model.name == "alexnet2012"
    cfg = compose_config("train", ["device=alexnet_split", "device.devices=[cuda:0,cpu]"])
    assert list(cfg.device.devices) == ["cuda:0", "cpu"]
    assert compose_config("train", ["device=mps"]).device.name == "mps"


def test_cli_composes_the_split_device(tmp_path: Path) -> None:
    done = run_cli(
        "cnn-train", "--cfg", "job", "device=alexnet_split", "model=alexnet2012", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "name: alexnet_split" in done.stdout and "- cuda:1" in done.stdout
    assert "name: alexnet2012" in done.stdout


def test_a_trained_checkpoint_loads_into_the_split_model(train_config, tmp_path: Path) -> None:
    run_training(train_config("model=alexnet2012", "trainer.max_steps=2"), tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    grouped = build_model("alexnet2012", 10, "imagenet").eval()
    grouped.load_state_dict(state["model"])
    split = SplitAlexNet([torch.device("cpu")] * 2, num_classes=10, dropout=0.5).eval()
    split.load_state_dict(state["model"])
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(split(images), grouped(images))


def test_cnn_train_trains_the_split_model_and_saves_the_grouped_form(train_config, tmp_path):
    run_training(
        train_config("model=alexnet2012", "device=alexnet_split", "device.devices=[cpu,cpu]"),
        tmp_path,
    )
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    build_model("alexnet2012", 10, "imagenet").load_state_dict(state["model"])
