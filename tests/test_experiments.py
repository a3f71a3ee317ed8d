"""The paper recipes under `configs/experiment/` compose and carry their papers' settings."""

from __future__ import annotations

from importlib import resources

import pytest

from tests.helpers import compose_config

RECIPES = {
    "alexnet2012_imagenet": {
        "data.batch_size": 128,
        "optimizer.lr": 0.01,
        "optimizer.weight_decay": 5e-4,
        "scheduler.name": "plateau",
        "trainer.epochs": 90,
        "data.augment": "alexnet2012",
    },
    "vgg16_imagenet": {
        "data.batch_size": 256,
        "optimizer.lr": 0.01,
        "scheduler.name": "plateau",
        "model.dropout": 0.5,
        "trainer.epochs": 74,
    },
    "resnet34_imagenet": {
        "data.batch_size": 256,
        "optimizer.lr": 0.1,
        "optimizer.weight_decay": 1e-4,
        "scheduler.name": "multistep",
        "scheduler.milestones": [30, 60],
        "trainer.epochs": 90,
    },
    "resnet34_cifar10": {"model.variant": "small", "data.augment": "cifar"},
    "vgg16_cifar10": {"model.variant": "small", "data.augment": "cifar"},
}
# The datasets and the two-tower model the recipes name may live in other config files; the
# command line overrides them here so that the recipe's own values are what is checked.
STAND_INS = ["data=synthetic", "model=alexnet"]


def recipe_text(name: str) -> str:
    return (resources.files("cnn_train.configs") / "experiment" / f"{name}.yaml").read_text()


def value(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return list(node) if hasattr(node, "__len__") and not isinstance(node, str) else node


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_carries_the_papers_settings(name: str) -> None:
    model = [] if name.startswith(("vgg16", "resnet34")) else ["model=alexnet"]
    cfg = compose_config("train", [f"experiment={name}", "data=synthetic", *model])
    for key, expected in RECIPES[name].items():
        assert value(cfg, key) == expected, key
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.momentum == 0.9


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_is_global_cites_a_source_and_composes_with_any_device(name: str) -> None:
    text = recipe_text(name)
    assert text.startswith("# @package _global_")
    assert "20" in text.split("defaults:")[0]  # a year of the cited paper or a URL
    for device in ("cpu", "cuda", "auto"):
        cfg = compose_config("train", [f"experiment={name}", *STAND_INS, f"device={device}"])
        assert cfg.device.name == device


def test_a_recipe_value_can_still_be_overridden() -> None:
    cfg = compose_config(
        "train", ["experiment=resnet34_imagenet", "data=synthetic", "trainer.epochs=2"]
    )
    assert cfg.trainer.epochs == 2 and cfg.optimizer.lr == 0.1
