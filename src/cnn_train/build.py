"""Turn a composed config into the objects a run needs: dataset, model and their shapes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from cnn_train.data import Dataset, Loader, load_dataset, make_loader
from cnn_train.errors import UserError
from cnn_train.models import build_model, resolve_variant, working_image_size
from cnn_train.schema import ModelConfig

BASE_MODEL_KEYS = frozenset(item.name for item in fields(ModelConfig))


@dataclass
class ModelAndData:
    """A dataset and the model built for it, with the resolved variant, size and class count."""

    dataset: Dataset
    model: nn.Module
    variant: str
    image_size: int
    num_classes: int
    data_cfg: DictConfig

    @property
    def topk(self) -> int:
        """The k of top-k accuracy: 5, or the class count when there are fewer classes."""
        return min(5, self.num_classes)


def model_from_config(
    model_cfg: Mapping[str, Any], num_classes: int | None = None, variant: str | None = None
) -> nn.Module:
    """Build the model a model config names (a resolved one, as saved in checkpoints, by default).

    The keys its schema adds to ModelConfig (e.g. `dropout`) go to the builder.
    """
    options = {key: value for key, value in model_cfg.items() if key not in BASE_MODEL_KEYS}
    return build_model(
        model_cfg["name"],
        num_classes or model_cfg["num_classes"],
        variant or model_cfg["variant"],
        **options,
    )


def check_class_count(requested: int | None, in_data: int) -> int:
    """The class count to build: the data's, which `model.num_classes` may only repeat."""
    if in_data < 2:
        raise UserError(
            f"the dataset has {in_data} class; a classifier needs at least 2 (check data.root)"
        )
    if requested is not None and requested != in_data:
        raise UserError(
            f"model.num_classes={requested} but the dataset has {in_data} classes; leave "
            f"model.num_classes=null (the dataset's count) or set it to {in_data}"
        )
    return in_data


def build_model_and_data(model_cfg: DictConfig, data_cfg: DictConfig) -> ModelAndData:
    """Load the dataset, then build the model variant and image size that fit it."""
    dataset = load_dataset(data_cfg)
    num_classes = check_class_count(model_cfg.num_classes, len(dataset.class_names))
    variant = resolve_variant(
        model_cfg.name, model_cfg.variant, data_cfg.image_size or dataset.native_size
    )
    size = working_image_size(model_cfg.name, variant, dataset.native_size, data_cfg.image_size)
    model = model_from_config(model_cfg, num_classes, variant)
    return ModelAndData(dataset, model, variant, size, num_classes, data_cfg)


def model_for_summary(
    model_cfg: DictConfig, data_cfg: DictConfig
) -> tuple[nn.Module, str, int, int]:
    """The model a run would train, its variant, image size and class count (`cnn-summary`).

    `data.image_size` and `model.num_classes` win; the dataset is loaded only for what they
    leave open.
    """
    size, classes = data_cfg.image_size, model_cfg.num_classes
    native = size
    if size is None or classes is None:
        dataset = load_dataset(data_cfg)
        native, classes = dataset.native_size, classes or len(dataset.class_names)
    variant = resolve_variant(model_cfg.name, model_cfg.variant, native)
    size = working_image_size(model_cfg.name, variant, native, size)
    return model_from_config(model_cfg, classes, variant), variant, size, classes


def split_loader(
    built: ModelAndData,
    split: str,
    batch_size: int,
    device: torch.device,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Loader:
    """A loader over one split at the built model's image size.

    Data-parallel ranks pass `rank`/`world_size`: each reads its own share of the split.
    """
    cfg = built.data_cfg
    return make_loader(
        built.dataset,
        split,
        image_size=built.image_size,
        batch_size=batch_size,
        device=device,
        train=train,
        seed=seed,
        augment=cfg.augment,
        in_memory_setting=cfg.in_memory,
        num_workers=cfg.num_workers,
        max_bad_fraction=cfg.max_bad_fraction,
        rank=rank,
        world_size=world_size,
    )
