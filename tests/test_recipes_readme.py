"""The README's table of paper recipes says what each composed recipe holds, value for value."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from cnn_train.models import resolve_variant
from tests.helpers import compose_config

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| experiment | model, data | recipe | known result |"
SIDE = {"imagenet": 224, "cifar10": 32}  # the side each dataset's augmentation feeds the model

MODEL = re.compile(r"`(?P<model>\w+)`(?P<small> small-input)?( \([^)]*\))?")
DATA = re.compile(r"`(?P<data>\w+)`")
AUGMENT = re.compile(r"`(?P<augment>\w+)` augmentation")
# Each item of the recipe column, and the config values it states.
ITEMS: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"batch (\d+)"), lambda m: {"data.batch_size": int(m[1])}),
    (
        re.compile(r"SGD ([\d.]+)( Nesterov)?"),
        lambda m: {
            "optimizer.name": "sgd",
            "optimizer.momentum": float(m[1]),
            "optimizer.nesterov": m[2] is not None,
        },
    ),
    (
        re.compile(r"wd ([\d.e-]+)( on every parameter)?"),
        lambda m: {
            "optimizer.weight_decay": float(m[1]),
            "optimizer.decay_norm_and_bias": m[2] is not None,
        },
    ),
    (
        re.compile(r"LR ([\d.]+)( for batch (\d+))? cosine"),
        lambda m: {
            "optimizer.lr": float(m[1]),
            "optimizer.lr_base_batch": int(m[3]) if m[3] else None,
            "scheduler.name": "cosine",
        },
    ),
    (
        re.compile(r"LR ([\d.]+) /10 on plateau"),
        lambda m: {
            "optimizer.lr": float(m[1]),
            "scheduler.name": "plateau",
            "scheduler.factor": 0.1,
        },
    ),
    (
        re.compile(r"LR ([\d.]+) /10 at epochs (\d+) and (\d+)"),
        lambda m: {
            "optimizer.lr": float(m[1]),
            "scheduler.name": "multistep",
            "scheduler.gamma": 0.1,
            "scheduler.milestones": [int(m[2]), int(m[3])],
        },
    ),
    (re.compile(r"([\d.]+) warmup epochs"), lambda m: {"scheduler.warmup_epochs": float(m[1])}),
    (re.compile(r"dropout ([\d.]+)"), lambda m: {"model.dropout": float(m[1])}),
    (re.compile(r"zero-init residuals"), lambda m: {"model.zero_init_residual": True}),
    (re.compile(r"TrivialAugment"), lambda m: {"data.auto_augment": "trivialaugment"}),
    (re.compile(r"random erase ([\d.]+)"), lambda m: {"data.random_erase": float(m[1])}),
    (re.compile(r"MixUp ([\d.]+)"), lambda m: {"data.mixup_alpha": float(m[1])}),
    (re.compile(r"CutMix ([\d.]+)"), lambda m: {"data.cutmix_alpha": float(m[1])}),
    (re.compile(r"label smoothing ([\d.]+)"), lambda m: {"trainer.label_smoothing": float(m[1])}),
    (re.compile(r"EMA ([\d.]+)"), lambda m: {"trainer.ema_decay": float(m[1])}),
    (
        re.compile(r"crops (\d+)/(\d+)/(\d+)"),
        lambda m: {
            "data.train_crop_size": int(m[1]),
            "data.val_resize_size": int(m[2]),
            "data.val_crop_size": int(m[3]),
        },
    ),
    (re.compile(r"repeated aug (\d+)"), lambda m: {"data.repeated_aug": int(m[1])}),
    (re.compile(r"(\d+) epochs"), lambda m: {"trainer.epochs": int(m[1])}),
]
STATED_IN_EVERY_ROW = (
    "data.batch_size",
    "optimizer.name",
    "optimizer.weight_decay",
    "optimizer.lr",
    "scheduler.name",
    "trainer.epochs",
)


def readme_rows() -> dict[str, tuple[str, str]]:
    """experiment name -> (its "model, data" cell, its "recipe" cell), from the README's table."""
    table = README.read_text().split(HEADER, 1)[1].strip().split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[1:]:  # after the | --- | line
        name, model_data, recipe, _ = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows[name.strip("`")] = (model_data, recipe)
    return rows


def stated_values(model_data: str, recipe: str) -> dict[str, Any]:
    """Every config value a row states; an item the grammar above does not know fails."""
    cells = model_data.split(", ")
    assert len(cells) == 3, f"expected model, data, augmentation in {model_data!r}"
    model, data, augment = cells
    parts = [MODEL.fullmatch(model), DATA.fullmatch(data), AUGMENT.fullmatch(augment)]
    assert all(parts), f"cannot read {model_data!r}"
    stated: dict[str, Any] = {
        "model.name": parts[0]["model"],
        "model.variant": "small" if parts[0]["small"] else "imagenet",
        "data.name": parts[1]["data"],
        "data.augment": parts[2]["augment"],
        "scheduler.warmup_epochs": 0.0,  # unless the row names a warmup
        # ResNet recipes say when they zero-initialise residual blocks; none of the others has any
        **({"model.zero_init_residual": False} if parts[0]["model"] == "resnet34" else {}),
        "data.auto_augment": "none",  # unless the row names a policy
        "data.random_erase": 0.0,
    }
    for item in recipe.split(", "):
        readings = [(pattern.fullmatch(item), read) for pattern, read in ITEMS]
        matched = [read(match) for match, read in readings if match]
        assert len(matched) == 1, f"cannot read {item!r} in {recipe!r}"
        stated.update(matched[0])
    missing = [key for key in STATED_IN_EVERY_ROW if key not in stated]
    assert not missing, f"the row does not state {missing}"
    return stated


def composed(cfg, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    if dotted == "model.variant":
        return resolve_variant(cfg.model.name, node, SIDE[cfg.data.name])
    return list(node) if hasattr(node, "__len__") and not isinstance(node, str) else node


def test_the_table_lists_every_recipe() -> None:
    folder = resources.files("cnn_train.configs") / "experiment"
    names = {path.name.removesuffix(".yaml") for path in folder.iterdir() if path.name[0] != "_"}
    assert set(readme_rows()) == names


@pytest.mark.parametrize("name", sorted(readme_rows()))
def test_each_row_states_what_the_composed_recipe_holds(name: str) -> None:
    stated = stated_values(*readme_rows()[name])
    cfg = compose_config("train", [f"experiment={name}"])
    assert {key: composed(cfg, key) for key in stated} == stated
