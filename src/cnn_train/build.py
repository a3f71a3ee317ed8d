"""Turn a composed config into the objects a run needs: dataset, model and their shapes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from cnn_train.data.loaders import Dataset, Loader, load_dataset, make_loader
from cnn_train.data.policies import Augmentation
from cnn_train.errors import UserError
from cnn_train.models import get_spec, resolve_variant, working_image_size
from cnn_train.models.registry import build_from_config as model_from_config


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
    variant, size = model_shape(model_cfg, data_cfg, dataset.native_size)
    check_train_crop(model_cfg.name, variant, data_cfg.get("train_crop_size"))
    model = model_from_config(model_cfg, num_classes, variant)
    return ModelAndData(dataset, model, variant, size, num_classes, data_cfg)


def check_train_crop(name: str, variant: str, crop: int | None) -> None:
    """`data.train_crop_size` must keep the model's smallest input, as the evaluation crop must."""
    smallest = get_spec(name).min_size[variant]
    if crop is not None and crop < smallest:
        raise UserError(
            f"{name} ({variant} variant) needs images of at least {smallest} px, got "
            f"data.train_crop_size={crop}; use data.train_crop_size={smallest} or larger"
        )


def model_for_summary(
    model_cfg: DictConfig, data_cfg: DictConfig
) -> tuple[nn.Module, str, int, int]:
    """The model a run would train, its variant, image size and class count (`cnn-summary`).

    `data.image_size` and `model.num_classes` win; the dataset is loaded only for what they
    leave open.
    """
    native, classes = data_cfg.image_size, model_cfg.num_classes
    if native is None or classes is None:
        dataset = load_dataset(data_cfg)
        native, classes = dataset.native_size, classes or len(dataset.class_names)
    variant, size = model_shape(model_cfg, data_cfg, native)
    return model_from_config(model_cfg, classes, variant), variant, size, classes


def model_shape(model_cfg: DictConfig, data_cfg: DictConfig, native_size: int) -> tuple[str, int]:
    """The variant and the image side that a model config takes for images of `native_size`:
    the evaluation crop (`data.val_crop_size`, else `data.image_size`) is the model's input."""
    requested = data_cfg.get("val_crop_size") or data_cfg.image_size
    variant = resolve_variant(model_cfg.name, model_cfg.variant, requested or native_size)
    return variant, working_image_size(model_cfg.name, variant, native_size, requested)


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
        sampler=cfg.sampler,
        augmentation=Augmentation.from_config(cfg),
    )
