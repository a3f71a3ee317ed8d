"""Turn a composed config into the objects a run needs: dataset, model and their shapes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from cnn_train.data import Dataset, Loader, load_dataset, make_loader
from cnn_train.models import build_model, resolve_variant, working_image_size


@dataclass
class ModelAndData:
    """A dataset and the model built for it, with the resolved variant, size and class count."""

    dataset: Dataset
    model: nn.Module
    variant: str
    image_size: int
    num_classes: int
    data_cfg: DictConfig | None = None

    @property
    def topk(self) -> int:
        """The k of top-k accuracy: 5, or the class count when there are fewer classes."""
        return min(5, self.num_classes)


def build_model_and_data(model_cfg: DictConfig, data_cfg: DictConfig) -> ModelAndData:
    """Load the dataset, then build the model variant and image size that fit it."""
    dataset = load_dataset(data_cfg)
    num_classes = model_cfg.num_classes or len(dataset.class_names)
    variant = resolve_variant(
        model_cfg.name, model_cfg.variant, data_cfg.image_size or dataset.native_size
    )
    size = working_image_size(model_cfg.name, variant, dataset.native_size, data_cfg.image_size)
    model = build_model(model_cfg.name, num_classes, variant, model_cfg.dropout)
    return ModelAndData(dataset, model, variant, size, num_classes, data_cfg)


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
        augment=cfg.augment if cfg is not None else "none",
        in_memory_setting=cfg.get("in_memory", "auto") if cfg is not None else "auto",
        num_workers=cfg.num_workers if cfg is not None else 0,
        max_bad_fraction=cfg.get("max_bad_fraction", 0.01) if cfg is not None else 0.01,
        rank=rank,
        world_size=world_size,
    )
