"""The paper recipes under `configs/experiment/` compose as they are and carry their sources'
values."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from cnn_train.models import resolve_variant
from tests.helpers import compose_config

SGD = {"optimizer.name": "sgd", "optimizer.momentum": 0.9, "optimizer.nesterov": False}
# kuangliu/pytorch-cifar, main.py: SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
# on every parameter, batch 128, CosineAnnealingLR(T_max=200), no warmup.
KUANGLIU_CIFAR = {
    **SGD,
    "data.name": "cifar10",
    "data.augment": "cifar",
    "data.batch_size": 128,
    "optimizer.lr": 0.1,
    "optimizer.weight_decay": 5e-4,
    "optimizer.decay_norm_and_bias": True,
    "scheduler.name": "cosine",
    "scheduler.min_lr": 0.0,
    "scheduler.warmup_epochs": 0.0,
    "trainer.epochs": 200,
    "model.variant": "small",
}
# Each recipe's full settings as its source gives them, written out here, not read from the files.
RECIPES: dict[str, dict[str, Any]] = {
    "alexnet2012_imagenet": {
        **SGD,
        "model.name": "alexnet2012",
        "model.variant": "imagenet",
        "model.dropout": 0.5,
        "data.name": "imagenet",
        "data.augment": "alexnet2012",
        "data.batch_size": 128,
        "optimizer.lr": 0.01,
        "optimizer.weight_decay": 5e-4,
        "optimizer.decay_norm_and_bias": True,
        "scheduler.name": "plateau",
        "scheduler.factor": 0.1,
        "scheduler.warmup_epochs": 0.0,
        "trainer.epochs": 90,
    },
    "vgg16_imagenet": {
        **SGD,
        "model.name": "vgg16",
        "model.variant": "imagenet",
        "model.dropout": 0.5,
        "data.name": "imagenet",
        "data.augment": "alexnet2012",
        "data.batch_size": 256,
        "optimizer.lr": 0.01,
        "optimizer.weight_decay": 5e-4,
        "optimizer.decay_norm_and_bias": True,
        "scheduler.name": "plateau",
        "scheduler.factor": 0.1,
        "scheduler.warmup_epochs": 0.0,
        "trainer.epochs": 74,
    },
    "resnet34_imagenet": {
        **SGD,
        "model.name": "resnet34",
        "model.variant": "imagenet",
        "data.name": "imagenet",
        "data.augment": "imagenet",
        "data.batch_size": 256,
        "optimizer.lr": 0.1,
        "optimizer.weight_decay": 1e-4,
        "optimizer.decay_norm_and_bias": True,
        "scheduler.name": "multistep",
        "scheduler.milestones": [30, 60],
        "scheduler.gamma": 0.1,
        "scheduler.warmup_epochs": 0.0,
        "trainer.epochs": 90,
    },
    "resnet34_cifar10": {**KUANGLIU_CIFAR, "model.name": "resnet34"},
    "vgg16_cifar10": {**KUANGLIU_CIFAR, "model.name": "vgg16", "model.dropout": 0.5},
}
SOURCES = {
    "alexnet2012_imagenet": "Krizhevsky, Sutskever and Hinton",
    "vgg16_imagenet": "Simonyan and Zisserman",
    "resnet34_imagenet": "He, Zhang, Ren and Sun",
    "resnet34_cifar10": "github.com/kuangliu/pytorch-cifar",
    "vgg16_cifar10": "github.com/kuangliu/pytorch-cifar",
}
YEARS = {
    "alexnet2012_imagenet": "NeurIPS 2012",
    "vgg16_imagenet": "ICLR 2015",
    "resnet34_imagenet": "CVPR 2016",
}
SIDE = {"imagenet": 224, "cifar10": 32}  # the side each dataset's augmentation feeds the model


def recipe_text(name: str) -> str:
    return (resources.files("cnn_train.configs") / "experiment" / f"{name}.yaml").read_text()


def value(cfg, dotted: str) -> Any:
    """The composed value at `dotted`; `model.variant` as the run resolves it (`auto` chosen)."""
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    if dotted == "model.variant":
        return resolve_variant(cfg.model.name, node, SIDE[cfg.data.name])
    return list(node) if hasattr(node, "__len__") and not isinstance(node, str) else node


def test_every_recipe_file_is_checked() -> None:
    folder = resources.files("cnn_train.configs") / "experiment"
    names = {path.name.removesuffix(".yaml") for path in folder.iterdir()}
    assert names - {"__init__.py"} == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_carries_its_sources_settings(name: str) -> None:
    cfg = compose_config("train", [f"experiment={name}"])
    found = {key: value(cfg, key) for key in RECIPES[name]}
    assert found == RECIPES[name]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_is_global_cites_its_source_and_composes_with_any_device(name: str) -> None:
    text = recipe_text(name)
    assert text.startswith("# @package _global_")
    header = " ".join(line.lstrip("# ") for line in text.split("defaults:")[0].splitlines())
    assert SOURCES[name] in header
    assert YEARS.get(name, "") in header
    for device in ("cpu", "cuda", "auto"):
        cfg = compose_config("train", [f"experiment={name}", f"device={device}"])
        assert cfg.device.name == device and cfg.model.name == RECIPES[name]["model.name"]


def test_a_recipe_value_can_still_be_overridden() -> None:
    cfg = compose_config("train", ["experiment=resnet34_imagenet", "trainer.epochs=2"])
    assert cfg.trainer.epochs == 2 and cfg.optimizer.lr == 0.1
