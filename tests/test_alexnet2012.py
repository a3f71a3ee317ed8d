"""The paper's two-tower AlexNet, its split over two devices, and their configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn_train.errors import UserError
from cnn_train.models import build_model
from cnn_train.models.alexnet2012 import AlexNet2012, TowerLocalResponseNorm
from cnn_train.models.split import SplitAlexNet, group_state_dict, place_model
from cnn_train.schema import validate_train
from tests.conftest import compose_config


def small_alexnet(dropout: float = 0.0) -> AlexNet2012:
    torch.manual_seed(0)
    model = build_model("alexnet2012", 10, "imagenet", dropout=dropout)
    assert isinstance(model, AlexNet2012)
    return model


def test_parameter_count_matches_the_paper() -> None:
    model = build_model("alexnet2012", 1000, "imagenet")
    assert sum(p.numel() for p in model.parameters()) == 60_965_224


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


def test_paper_initialisation() -> None:
    model = AlexNet2012()
    assert model.features.conv2.bias.eq(1).all() and model.classifier.fc7.bias.eq(1).all()
    assert model.features.conv3.bias.eq(0).all() and model.classifier.fc8.bias.eq(0).all()
    assert abs(model.classifier.fc6.weight.std().item() - 0.01) < 1e-3


def test_split_gives_the_grouped_outputs_and_gradients() -> None:
    grouped = small_alexnet()
    split = place_model(grouped, ["cpu", "cpu"])
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
    split = place_model(small_alexnet(dropout=0.5), ["cpu", "cpu"])
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
        place_model(build_model("alexnet", 10, "imagenet"), ["cpu", "cpu"])


@pytest.mark.parametrize("devices", [[], ["cpu"], ["cpu", "cpu", "cpu"]])
def test_split_needs_two_devices(devices: list[str]) -> None:
    with pytest.raises(UserError, match=r"device\.devices"):
        place_model(small_alexnet(), devices)


def test_split_config_composes_with_its_model() -> None:
    cfg = compose_config("train", ["model=alexnet2012", "device=alexnet_split"])
    validate_train(cfg)
    assert cfg.device.name == "alexnet_split" and list(cfg.device.devices) == ["cuda:0", "cuda:1"]
    assert cfg.model.name == "alexnet2012"
    cfg = compose_config("train", ["device=alexnet_split", "device.devices=[cuda:0,cpu]"])
    assert list(cfg.device.devices) == ["cuda:0", "cpu"]
    assert compose_config("train", ["device=mps"]).device.name == "mps"
