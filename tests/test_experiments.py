"""The paper recipes under `configs/experiment/` compose as they are and carry their sources'
values."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from cnn_train.models import resolve_variant
from tests.helpers import compose_config, run_cli

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
        "model.zero_init_residual": False,
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
    "resnet34_cifar10": {
        **KUANGLIU_CIFAR,
        "model.name": "resnet34",
        "model.zero_init_residual": False,
    },
    # references/classification/README.md, the IMAGENET1K_V2 command line (8 GPUs x batch 128).
    "resnet34_imagenet_v2": {
        **SGD,
        "model.name": "resnet34",
        "model.variant": "imagenet",
        "model.zero_init_residual": False,
        "data.name": "imagenet",
        "data.augment": "imagenet",
        "data.batch_size": 128,
        "data.auto_augment": "trivialaugment",
        "data.random_erase": 0.1,
        "data.mixup_alpha": 0.2,
        "data.cutmix_alpha": 1.0,
        "data.train_crop_size": 176,
        "data.val_resize_size": 232,
        "data.val_crop_size": 224,
        "data.interpolation": "bilinear",
        "data.repeated_aug": 4,
        "optimizer.lr": 0.5,
        "optimizer.lr_base_batch": 1024,
        "optimizer.weight_decay": 2e-5,
        "optimizer.decay_norm_and_bias": False,
        "scheduler.name": "cosine",
        "scheduler.warmup_epochs": 5.0,
        "scheduler.warmup_start_factor": 0.01,
        "trainer.epochs": 600,
        "trainer.label_smoothing": 0.1,
        "trainer.monitor": "val_ema/acc1",
    },
    # TrivialAugment's CIFAR setting (AutoAugment's): Nesterov SGD, batch 128, LR 0.1 cosine,
    # wd 5e-4, 200 epochs, crop + flip, TA (wide), then Cutout (here random erasing).
    "resnet34_cifar10_ta": {
        **KUANGLIU_CIFAR,
        "model.name": "resnet34",
        "optimizer.nesterov": True,
        "data.auto_augment": "trivialaugment",
        "data.random_erase": 1.0,
        "data.train_crop_size": 32,
        "data.val_crop_size": 32,
        "trainer.label_smoothing": 0.0,
    },
    "vgg16_cifar10": {**KUANGLIU_CIFAR, "model.name": "vgg16", "model.dropout": 0.5},
}
SOURCES = {
    "alexnet2012_imagenet": "Krizhevsky, Sutskever and Hinton",
    "vgg16_imagenet": "Simonyan and Zisserman",
    "resnet34_imagenet": "He, Zhang, Ren and Sun",
    "resnet34_cifar10": "github.com/kuangliu/pytorch-cifar",
    "vgg16_cifar10": "github.com/kuangliu/pytorch-cifar",
    "resnet34_imagenet_v2": "How to Train State-Of-The-Art Models Using TorchVision",
    "resnet34_cifar10_ta": "Müller",
}
YEARS = {
    "alexnet2012_imagenet": "NeurIPS 2012",
    "vgg16_imagenet": "ICLR 2015",
    "resnet34_imagenet": "CVPR 2016",
    "resnet34_cifar10_ta": "ICCV 2021",
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


@pytest.mark.parametrize(
    "name",
    [
        "resnet34_imagenet_v2",  # every new key at once; the CIFAR one adds none of its own
        pytest.param("resnet34_cifar10_ta", marks=pytest.mark.slow),
    ],
)
def test_todays_recipes_train_on_small_data(name: str, tmp_path: Path) -> None:
    """Every key of the recipe in use at once (policy, erase, mixing, crops, repetition, EMA)."""
    done = run_cli(
        "cnn-train",
        f"experiment={name}",
        "data=synthetic",
        "data.native_size=32",
        "data.train_samples=64",
        "data.val_samples=16",
        "data.batch_size=8",
        "trainer.max_steps=2",
        "device=cpu",
        "tracking.graph=false",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best val top-1" in done.stdout
